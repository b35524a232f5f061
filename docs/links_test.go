// Package docs holds amexd's documentation (the README's continuation);
// its test keeps the relative links of README.md and docs/*.md alive.
package docs

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

var (
	// link is an inline link or image: [text](target) or ![alt](target),
	// with an optional "title" after the target.
	link = regexp.MustCompile(`!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)`)
	// codeSpan is inline code, whose brackets are not links.
	codeSpan = regexp.MustCompile("`+[^`]*`+")
	// heading is an ATX heading.
	heading = regexp.MustCompile(`^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$`)
	// inlineLink keeps a link's text when a heading holds one.
	inlineLink = regexp.MustCompile(`!?\[([^\]]*)\]\([^)]*\)`)
	// external targets are left to the reader: a scheme, or //host.
	external = regexp.MustCompile(`^([a-zA-Z][a-zA-Z0-9+.-]*:|//)`)
	// lineAnchor is GitHub's anchor of a line or lines in a source file.
	lineAnchor = regexp.MustCompile(`^L\d+(-L\d+)?$`)
)

// mdLink is one relative link in a markdown file.
type mdLink struct {
	line   int
	target string
}

// parse returns a markdown file's relative links and the anchors of its
// headings, skipping fenced code blocks.
func parse(text string) (links []mdLink, anchors map[string]bool) {
	anchors = map[string]bool{}
	seen := map[string]int{}
	fence := ""
	for i, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if fence != "" {
			if strings.HasPrefix(trimmed, fence) && strings.Trim(trimmed, fence[:1]) == "" {
				fence = ""
			}
			continue
		}
		if strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
			n := len(trimmed) - len(strings.TrimLeft(trimmed, trimmed[:1]))
			fence = trimmed[:n]
			continue
		}
		if m := heading.FindStringSubmatch(line); m != nil {
			a := slug(m[2])
			if n := seen[a]; n > 0 {
				anchors[fmt.Sprintf("%s-%d", a, n)] = true
			} else {
				anchors[a] = true
			}
			seen[a]++
		}
		for _, m := range link.FindAllStringSubmatch(codeSpan.ReplaceAllString(line, ""), -1) {
			if !external.MatchString(m[1]) {
				links = append(links, mdLink{line: i + 1, target: m[1]})
			}
		}
	}
	return links, anchors
}

// slug is GitHub's anchor for a heading: its text lower-cased, every
// character but letters, digits, '-', '_' and spaces dropped, and spaces
// made '-'.
func slug(h string) string {
	h = inlineLink.ReplaceAllString(h, "$1")
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

// pages are the documents whose links are checked, relative to the
// repository's root.
func pages(t *testing.T) []string {
	t.Helper()
	docs, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) == 0 {
		t.Fatal("no docs/*.md found")
	}
	files := []string{"README.md"}
	for _, d := range docs {
		files = append(files, filepath.Join("docs", d))
	}
	return files
}

// TestLinksResolve fails on a dead relative link: every link and image in
// README.md and docs/*.md must name a file or directory that exists, and
// an anchor must name a heading of the markdown file it points into.
func TestLinksResolve(t *testing.T) {
	root := ".."
	files := pages(t)
	anchorsOf := map[string]map[string]bool{}
	linksOf := map[string][]mdLink{}
	for _, f := range files {
		text, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		linksOf[f], anchorsOf[f] = parse(string(text))
	}
	checked := 0
	for _, f := range files {
		for _, l := range linksOf[f] {
			checked++
			path, anchor, _ := strings.Cut(l.target, "#")
			target := f
			if path != "" {
				p, err := url.PathUnescape(path)
				if err != nil {
					t.Errorf("%s:%d: %s: %v", f, l.line, l.target, err)
					continue
				}
				target = filepath.Join(filepath.Dir(f), filepath.FromSlash(p))
				if _, err := os.Stat(filepath.Join(root, target)); err != nil {
					t.Errorf("%s:%d: dead link %s: no %s", f, l.line, l.target, filepath.ToSlash(target))
					continue
				}
			}
			if anchor == "" {
				continue
			}
			if !strings.HasSuffix(target, ".md") {
				if !lineAnchor.MatchString(anchor) {
					t.Errorf("%s:%d: %s: #%s is an anchor in a file that has no headings", f, l.line, l.target, anchor)
				}
				continue
			}
			anchors, ok := anchorsOf[target]
			if !ok {
				text, err := os.ReadFile(filepath.Join(root, target))
				if err != nil {
					t.Errorf("%s:%d: %s: %v", f, l.line, l.target, err)
					continue
				}
				_, anchors = parse(string(text))
				anchorsOf[target] = anchors
			}
			if !anchors[anchor] {
				t.Errorf("%s:%d: dead link %s: %s has no heading #%s", f, l.line, l.target, filepath.ToSlash(target), anchor)
			}
		}
	}
	if checked == 0 {
		t.Fatal("found no relative links at all: the parser is broken")
	}
	t.Logf("checked %d relative links in %d files", checked, len(files))
}

// TestSlug pins the heading anchors to GitHub's rules.
func TestSlug(t *testing.T) {
	for h, want := range map[string]string{
		"Records, keys and ids":               "records-keys-and-ids",
		"Retrying a write: `Idempotency-Key`": "retrying-a-write-idempotency-key",
		"Install on a VM":                     "install-on-a-vm",
		"Performance and resilience":          "performance-and-resilience",
		"amexctl, the operator CLI":           "amexctl-the-operator-cli",
		"A [linked](x.md) heading":            "a-linked-heading",
		"snake_case and hy-phen":              "snake_case-and-hy-phen",
	} {
		if got := slug(h); got != want {
			t.Errorf("slug(%q) = %q, want %q", h, got, want)
		}
	}
}

// TestParse checks that links in code are not links, that a heading in a
// fence is not a heading, and that repeated headings get GitHub's suffixes.
func TestParse(t *testing.T) {
	text := "# Top\n" +
		"See [a](a.md), ![img](p.png \"title\"), [web](https://example.com) and `[not](code.md)`.\n" +
		"```sh\n# not a heading\n[not](fenced.md)\n```\n" +
		"## Top\n" +
		"   ```\n   [not](indented.md)\n   ```\n" +
		"[same](#top-1)\n"
	links, anchors := parse(text)
	var got []string
	for _, l := range links {
		got = append(got, fmt.Sprintf("%d:%s", l.line, l.target))
	}
	if want := "2:a.md 2:p.png 11:#top-1"; strings.Join(got, " ") != want {
		t.Errorf("links %q, want %q", strings.Join(got, " "), want)
	}
	for _, a := range []string{"top", "top-1"} {
		if !anchors[a] {
			t.Errorf("no anchor %q in %v", a, anchors)
		}
	}
	if anchors["not-a-heading"] {
		t.Error("a heading in a fence counted")
	}
}

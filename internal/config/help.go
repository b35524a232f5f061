package config

import (
	"fmt"
	"io"
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/amexd/amexd/configs"
)

// keyDoc is what -h says of a key: its meaning and its default, as the
// commented configs/amexd.yaml writes them.
type keyDoc struct{ meaning, value string }

// keyDocs reads every key's comment and value from configs/amexd.yaml. A
// key of a one-line section ({fresh: 30s, stale: 10m}) has the comments of
// its sections; any other key must have its own.
func keyDocs() (map[string]keyDoc, error) {
	var root yaml.Node
	if err := yaml.Unmarshal([]byte(configs.Local), &root); err != nil {
		return nil, fmt.Errorf("parse the embedded configs/amexd.yaml: %w", err)
	}
	docs := map[string]keyDoc{}
	if len(root.Content) == 1 {
		collectDocs(root.Content[0], "", nil, docs)
	}
	return docs, nil
}

func collectDocs(m *yaml.Node, prefix string, sections []string, docs map[string]keyDoc) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		key := k.Value
		if prefix != "" {
			key = prefix + "." + key
		}
		own := commentOf(k, v)
		if v.Kind == yaml.MappingNode {
			inner := sections
			if own != "" {
				inner = append(append([]string(nil), sections...), own)
			}
			collectDocs(v, key, inner, docs)
			continue
		}
		if own == "" && m.Style == yaml.FlowStyle {
			own = strings.Join(sections, "; ")
		}
		docs[key] = keyDoc{meaning: own, value: valueText(v)}
	}
}

// commentOf is the comment on a key's line, else the one above it.
func commentOf(k, v *yaml.Node) string {
	for _, c := range []string{k.LineComment, v.LineComment, k.HeadComment} {
		if c = strings.TrimSpace(c); c != "" {
			var lines []string
			for line := range strings.SplitSeq(c, "\n") {
				lines = append(lines, strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "#")))
			}
			return strings.Join(lines, " ")
		}
	}
	return ""
}

func valueText(v *yaml.Node) string {
	switch {
	case v.Kind == yaml.SequenceNode && len(v.Content) == 0:
		return "[]"
	case v.Kind == yaml.SequenceNode:
		items := make([]string, len(v.Content))
		for i, item := range v.Content {
			items[i] = item.Value
		}
		return strings.Join(items, ",")
	case v.Value == "":
		return `""`
	}
	return v.Value
}

// printUsage writes -h's text: every key once, with its meaning, default
// and environment variable.
func printUsage(out io.Writer, fields []field) {
	fmt.Fprintln(out, "Usage: amexd [-config FILE] [-KEY VALUE ...]")
	fmt.Fprintln(out, "\nEvery key can also be set as AMEXD_KEY in the environment (dots become underscores);")
	fmt.Fprintln(out, "configs/amexd.yaml lists them all with their defaults.")
	fmt.Fprintln(out, "\nFlags:")
	fmt.Fprintln(out, "  -config file\n    \tYAML configuration file (env AMEXD_CONFIG)")
	docs, err := keyDocs()
	if err != nil {
		fmt.Fprintln(out, "  (descriptions unavailable:", err, ")")
	}
	defaults := reflect.ValueOf(Default())
	for _, f := range fields {
		d, ok := docs[f.Key]
		if !ok {
			d.value = defaultText(defaults.FieldByIndex(f.Index))
		}
		name := "  -" + f.Key
		if f.Type.Kind() != reflect.Bool {
			name += " " + placeholder(f.Type)
		}
		fmt.Fprintf(out, "%s\n    \t", name)
		if d.meaning != "" {
			fmt.Fprint(out, d.meaning, " ")
		}
		fmt.Fprintf(out, "(default %s; env %s)\n", d.value, f.Env())
	}
}

func placeholder(t reflect.Type) string {
	switch {
	case t == reflect.TypeOf(time.Duration(0)):
		return "duration"
	case t == bytesType:
		return "size"
	case t.Kind() == reflect.Slice:
		return "list"
	case t.Kind() == reflect.Float64:
		return "number"
	case t.Kind() == reflect.Int64:
		return "int"
	}
	return t.Kind().String()
}

func defaultText(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case time.Duration:
		return x.String()
	case []string:
		if len(x) == 0 {
			return "[]"
		}
		return strings.Join(x, ",")
	case string:
		if x == "" {
			return `""`
		}
	}
	return fmt.Sprint(v.Interface())
}

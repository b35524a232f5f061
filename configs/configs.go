// Package configs holds amexd's shipped configuration files, so that the
// daemon can describe its keys (amexd -h) in the words of the commented
// defaults instead of a second copy that could drift from them.
package configs

import _ "embed"

// Local is configs/amexd.yaml: the built-in defaults with a comment for
// every key.
//
//go:embed amexd.yaml
var Local string

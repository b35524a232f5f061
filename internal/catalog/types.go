package catalog

import (
	"encoding/json"
	"reflect"
	"strings"
)

// typeMismatch reports a field whose JSON value has the wrong type, naming
// both types as a person would: `field "userId" must be an integer, not a
// string`.
func typeMismatch(e *json.UnmarshalTypeError) *InvalidError {
	return invalid("invalid_field", e.Field, "field %q must be %s, not %s", e.Field, typeName(e.Type), jsonKind(e.Value))
}

// typeName names a Go type by the JSON value it accepts, with its article.
func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return "a " + t.String()
}

// jsonKind names the kind of JSON value encoding/json reports in
// UnmarshalTypeError.Value ("string", "number", "bool", "array",
// "object"), with its article; a number that does not fit ("number 1.5")
// is named by its value.
func jsonKind(v string) string {
	switch v {
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "array":
		return "an array"
	case "object":
		return "an object"
	}
	if n, ok := strings.CutPrefix(v, "number "); ok {
		return n
	}
	return "a " + v
}

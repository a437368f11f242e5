package v1alpha1

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"sort"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// This file turns JSON or YAML text into a syntax-neutral tree of values
// that keeps what the strict decoder needs and the usual decoders throw
// away: duplicate keys, key order and line numbers.
//
// JSON (see looksLikeJSON) is read with encoding/json: YAML parsers refuse
// some valid JSON, such as the "\/" escape. Everything else is read with
// the YAML 1.2 parser of go.yaml.in/yaml/v3. As in YAML 1.1, a plain scalar
// with a leading zero such as 0660 is an octal integer (432); 0o660 and
// 0x1b0 work too. Unlike YAML 1.1, yes/no/on/off are strings, not booleans.

type valueKind int

const (
	kindNull valueKind = iota
	kindString
	kindNumber
	kindBool
	kindObject
	kindList
	kindOther // a YAML scalar of another type (timestamp, binary, custom tag)
)

// maxDepth bounds nesting; the deepest field of these types is at depth 4.
const maxDepth = 32

// maxValues bounds the number of values of a YAML document once its aliases
// are expanded (a "billion laughs" document is small but expands without
// end). Real configurations have a few hundred.
const maxValues = 1 << 20

// value is one node of a parsed document.
type value struct {
	kind valueKind
	// line is the 1-based line of the node, 0 when unknown.
	line int
	// str is the string (kindString), the literal (kindNumber) or a
	// description such as "a timestamp" (kindOther).
	str string
	// num is the value of an integer number, nil for a number with a
	// fraction or an exponent.
	num     *big.Int
	boolean bool
	items   []*value // kindList
	members []member // kindObject, in document order, duplicates kept
	// size is the number of values in v once aliases are expanded, v
	// included, capped at maxValues+1.
	size int
}

// member is one key of an object.
type member struct {
	name string
	// bad is set when the key itself cannot be used (merge key, a list as
	// key); name is then meaningless.
	bad  string
	line int
	val  *value
}

var nullValue = &value{kind: kindNull}

// describe names the kind of v for "must be X, not Y" messages.
func (v *value) describe() string {
	switch v.kind {
	case kindNull:
		return "null"
	case kindString:
		return "a string"
	case kindNumber:
		return "a number"
	case kindBool:
		return "a boolean"
	case kindObject:
		return "an object"
	case kindList:
		return "a list"
	default:
		return v.str
	}
}

// member returns the first member called name, or nil.
func (v *value) member(name string) *member {
	for i := range v.members {
		if v.members[i].bad == "" && v.members[i].name == name {
			return &v.members[i]
		}
	}
	return nil
}

// parseDocument reads one JSON or YAML document. Empty input, whitespace,
// comments only or a literal null give nullValue. A returned error is a
// *DecodeError.
func parseDocument(data []byte) (*value, error) {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // UTF-8 byte order mark
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nullValue, nil
	}
	if looksLikeJSON(trimmed) {
		return parseJSON(data)
	}
	return parseYAML(data)
}

// looksLikeJSON reports whether text is meant as JSON: an object whose first
// key is double-quoted, an empty object, or a list. Such text is read as
// JSON only, never as YAML flow style: a JSON mistake such as a missing
// value must be an error, not a YAML null that silently unsets a field.
// {apiVersion: ...} is YAML.
func looksLikeJSON(trimmed []byte) bool {
	switch trimmed[0] {
	case '[':
		return true
	case '{':
		rest := bytes.TrimLeft(trimmed[1:], " \t\r\n")
		return len(rest) == 0 || rest[0] == '"' || rest[0] == '}'
	}
	return false
}

// lineIndex maps byte offsets to line numbers.
type lineIndex []int

func newLineIndex(data []byte) lineIndex {
	var idx lineIndex
	for i, c := range data {
		if c == '\n' {
			idx = append(idx, i)
		}
	}
	return idx
}

// at returns the 1-based line of the byte at offset off.
func (l lineIndex) at(off int64) int {
	return sort.SearchInts(l, int(off)) + 1
}

// column returns the 1-based column of the byte at offset off.
func (l lineIndex) column(off int64) int {
	line := l.at(off)
	start := 0
	if line > 1 {
		start = l[line-2] + 1
	}
	return int(off) - start + 1
}

type jsonReader struct {
	dec   *json.Decoder
	lines lineIndex
}

func parseJSON(data []byte) (*value, error) {
	r := &jsonReader{dec: json.NewDecoder(bytes.NewReader(data)), lines: newLineIndex(data)}
	r.dec.UseNumber()
	v, err := r.read(0)
	if err != nil {
		return nil, r.error(err)
	}
	end := r.dec.InputOffset()
	if _, err := r.dec.Token(); err == io.EOF {
		return v, nil
	}
	// Point at the first byte after the value that is not white space.
	for end < int64(len(data)) && bytes.IndexByte([]byte(" \t\r\n"), data[end]) >= 0 {
		end++
	}
	return nil, &DecodeError{Detail: fmt.Sprintf("invalid JSON at line %d, column %d: unexpected content after the top-level value",
		r.lines.at(end), r.lines.column(end))}
}

func (r *jsonReader) error(err error) error {
	var de *DecodeError
	if errors.As(err, &de) {
		return de
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		// Token reports the offset of the offending byte.
		off := se.Offset
		return &DecodeError{Detail: fmt.Sprintf("invalid JSON at line %d, column %d: %v",
			r.lines.at(off), r.lines.column(off), err)}
	}
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return &DecodeError{Detail: "invalid JSON: unexpected end of input"}
	}
	off := r.dec.InputOffset()
	return &DecodeError{Detail: fmt.Sprintf("invalid JSON at line %d, column %d: %v",
		r.lines.at(off), r.lines.column(off), err)}
}

// read reads the next value. InputOffset is just past the token, so the line
// is that of the token's last byte.
func (r *jsonReader) read(depth int) (*value, error) {
	if depth > maxDepth {
		return nil, &DecodeError{Detail: MsgTooDeep, Line: r.lines.at(r.dec.InputOffset())}
	}
	tok, err := r.dec.Token()
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return nil, err
	}
	line := r.lines.at(r.dec.InputOffset() - 1)
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			v := &value{kind: kindObject, line: line}
			for r.dec.More() {
				ktok, err := r.dec.Token()
				if err != nil {
					return nil, err
				}
				key, ok := ktok.(string)
				if !ok {
					return nil, fmt.Errorf("expected an object key, found %v", ktok)
				}
				kline := r.lines.at(r.dec.InputOffset() - 1)
				val, err := r.read(depth + 1)
				if err != nil {
					return nil, err
				}
				v.members = append(v.members, member{name: key, line: kline, val: val})
			}
			return v, r.closing('}')
		case '[':
			v := &value{kind: kindList, line: line}
			for r.dec.More() {
				item, err := r.read(depth + 1)
				if err != nil {
					return nil, err
				}
				v.items = append(v.items, item)
			}
			return v, r.closing(']')
		default:
			return nil, fmt.Errorf("unexpected %q", rune(t))
		}
	case string:
		return &value{kind: kindString, line: line, str: t}, nil
	case json.Number:
		v := &value{kind: kindNumber, line: line, str: t.String()}
		if n, ok := new(big.Int).SetString(t.String(), 10); ok {
			v.num = n
		}
		return v, nil
	case bool:
		return &value{kind: kindBool, line: line, boolean: t}, nil
	case nil:
		return &value{kind: kindNull, line: line}, nil
	}
	return nil, fmt.Errorf("unexpected token %v", tok)
}

func (r *jsonReader) closing(want json.Delim) error {
	tok, err := r.dec.Token()
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	if err != nil {
		return err
	}
	if tok != want {
		return fmt.Errorf("expected %q, found %v", rune(want), tok)
	}
	return nil
}

// parseYAML reads the first document of a YAML stream and makes sure that no
// other document follows.
func parseYAML(data []byte) (v *value, err error) {
	defer func() {
		// The parser reports errors by panicking and recovering; should one
		// escape, a bad file must still give an error, not a crash.
		if r := recover(); r != nil {
			v, err = nil, &DecodeError{Detail: fmt.Sprintf("invalid YAML: %v", r)}
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF {
			return nullValue, nil
		}
		return nil, yamlError(err)
	}
	for {
		var next yaml.Node
		err := dec.Decode(&next)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, yamlError(err)
		}
		if !emptyDocument(&next) {
			return nil, &DecodeError{Detail: MsgMultipleDocuments, Line: next.Line}
		}
	}
	c := &yamlConverter{memo: map[*yaml.Node]*value{}}
	v, err = c.convert(&doc, 0)
	if err == nil && v.size > maxValues {
		return nil, &DecodeError{Detail: MsgTooManyValues}
	}
	return v, err
}

// addSize adds n to a size, saturating at maxValues+1.
func addSize(size, n int) int {
	return min(size+n, maxValues+1)
}

func yamlError(err error) error {
	return &DecodeError{Detail: "invalid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
}

func emptyDocument(n *yaml.Node) bool {
	if n.Kind != yaml.DocumentNode {
		return n.Kind == 0
	}
	for _, c := range n.Content {
		if !(c.Kind == yaml.ScalarNode && c.ShortTag() == "!!null") {
			return false
		}
	}
	return true
}

type yamlConverter struct {
	// memo holds the converted value of every anchored node, so that an
	// alias costs nothing and a self-referencing alias is caught (nil entry
	// while the anchored node is being converted).
	memo map[*yaml.Node]*value
}

func (c *yamlConverter) convert(n *yaml.Node, depth int) (*value, error) {
	if depth > maxDepth {
		return nil, &DecodeError{Detail: MsgTooDeep, Line: n.Line}
	}
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			return nil, &DecodeError{Detail: "invalid YAML: alias to an unknown anchor", Line: n.Line}
		}
		return c.convert(n.Alias, depth+1)
	}
	if n.Anchor != "" {
		if v, ok := c.memo[n]; ok {
			if v == nil {
				return nil, &DecodeError{Detail: fmt.Sprintf("invalid YAML: anchor %q refers to itself", n.Anchor), Line: n.Line}
			}
			return v, nil
		}
		c.memo[n] = nil
	}
	v, err := c.convertNode(n, depth)
	if err != nil {
		return nil, err
	}
	if n.Anchor != "" {
		c.memo[n] = v
	}
	return v, nil
}

func (c *yamlConverter) convertNode(n *yaml.Node, depth int) (*value, error) {
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nullValue, nil
		}
		return c.convert(n.Content[0], depth)
	case yaml.MappingNode:
		v := &value{kind: kindObject, line: n.Line, size: 1}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			for k.Kind == yaml.AliasNode && k.Alias != nil && depth < maxDepth {
				k = k.Alias
				depth++
			}
			m := member{line: k.Line}
			switch {
			case k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge":
				m.bad = MsgMergeKey
			case k.Kind == yaml.ScalarNode:
				m.name = k.Value
			default:
				m.bad = MsgKeyNotString
			}
			val, err := c.convert(n.Content[i+1], depth+1)
			if err != nil {
				return nil, err
			}
			m.val = val
			v.members = append(v.members, m)
			v.size = addSize(v.size, val.size)
		}
		return v, nil
	case yaml.SequenceNode:
		v := &value{kind: kindList, line: n.Line, size: 1}
		for _, item := range n.Content {
			iv, err := c.convert(item, depth+1)
			if err != nil {
				return nil, err
			}
			v.items = append(v.items, iv)
			v.size = addSize(v.size, iv.size)
		}
		return v, nil
	case yaml.ScalarNode:
		return scalar(n), nil
	}
	return nil, &DecodeError{Detail: fmt.Sprintf("invalid YAML: unexpected node kind %d", n.Kind), Line: n.Line}
}

func scalar(n *yaml.Node) *value {
	v := &value{line: n.Line, str: n.Value, size: 1}
	switch tag := n.ShortTag(); tag {
	case "!!str":
		v.kind = kindString
	case "!!null":
		v.kind = kindNull
	case "!!bool":
		var b bool
		if err := n.Decode(&b); err != nil {
			v.kind, v.str = kindOther, fmt.Sprintf("%q tagged !!bool", n.Value)
			break
		}
		v.kind, v.boolean = kindBool, b
	case "!!int":
		v.kind = kindNumber
		// Base 0: 0660 and 0o660 are octal, 0x1b0 hexadecimal.
		if num, ok := new(big.Int).SetString(n.Value, 0); ok {
			v.num = num
		}
	case "!!float":
		v.kind = kindNumber
		// A float only because it is too long for 64 bits.
		if num, ok := new(big.Int).SetString(n.Value, 10); ok {
			v.num = num
		}
	case "!!timestamp":
		v.kind, v.str = kindOther, "a timestamp"
	case "!!binary":
		v.kind, v.str = kindOther, "binary data"
	default:
		v.kind, v.str = kindOther, "a value tagged "+tag
	}
	return v
}

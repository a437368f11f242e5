package v1alpha1

import (
	"fmt"
	"math"
	"math/big"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// strictDecoder fills a Go value from a parsed document the way
// encoding/json would, except that it refuses unknown and duplicate fields
// and reports every problem with the field path it is about. Null leaves a
// field unset; an empty list leaves a slice nil.
type strictDecoder struct {
	errs []error
}

// decodeStrict decodes v into out, a pointer to a struct, and returns the
// problems found, in document order.
func decodeStrict(v *value, out any) []error {
	d := &strictDecoder{}
	d.decode(nil, v, reflect.ValueOf(out).Elem())
	return d.errs
}

func (d *strictDecoder) fail(p *field.Path, line int, detail string) {
	e := &DecodeError{Detail: detail, Line: line}
	if p != nil {
		e.Field = p.String()
	}
	d.errs = append(d.errs, e)
}

func (d *strictDecoder) wrongType(p *field.Path, v *value, want string) {
	d.fail(p, v.line, fmt.Sprintf(MsgWrongType, want, v.describe()))
}

func (d *strictDecoder) decode(p *field.Path, v *value, out reflect.Value) {
	if v.kind == kindNull {
		return
	}
	switch out.Kind() {
	case reflect.Pointer:
		elem := reflect.New(out.Type().Elem())
		d.decode(p, v, elem.Elem())
		out.Set(elem)
	case reflect.Struct:
		d.decodeStruct(p, v, out)
	case reflect.Slice:
		if v.kind != kindList {
			d.wrongType(p, v, "a list")
			return
		}
		if len(v.items) == 0 {
			return
		}
		s := reflect.MakeSlice(out.Type(), len(v.items), len(v.items))
		for i, item := range v.items {
			d.decode(p.Index(i), item, s.Index(i))
		}
		out.Set(s)
	case reflect.String:
		if v.kind != kindString {
			d.wrongType(p, v, "a string")
			return
		}
		out.SetString(v.str)
	case reflect.Bool:
		if v.kind != kindBool {
			d.wrongType(p, v, "true or false")
			return
		}
		out.SetBool(v.boolean)
	case reflect.Int32, reflect.Int64:
		lo, hi := int64(math.MinInt64), int64(math.MaxInt64)
		if out.Kind() == reflect.Int32 {
			lo, hi = math.MinInt32, math.MaxInt32
		}
		if n, ok := d.integer(p, v, big.NewInt(lo), new(big.Int).SetUint64(uint64(hi))); ok {
			out.SetInt(n.Int64())
		}
	case reflect.Uint32:
		if n, ok := d.integer(p, v, big.NewInt(0), big.NewInt(math.MaxUint32)); ok {
			out.SetUint(n.Uint64())
		}
	default:
		// Only reachable if a field of an unsupported Go type is added.
		d.fail(p, v.line, fmt.Sprintf("internal error: cannot decode into %s", out.Type()))
	}
}

func (d *strictDecoder) integer(p *field.Path, v *value, lo, hi *big.Int) (*big.Int, bool) {
	switch {
	case v.kind != kindNumber:
		d.wrongType(p, v, "an integer")
	case v.num == nil:
		d.fail(p, v.line, fmt.Sprintf(MsgWrongType, "an integer", v.str))
	case v.num.Cmp(lo) < 0 || v.num.Cmp(hi) > 0:
		d.fail(p, v.line, fmt.Sprintf(MsgIntegerRange, lo, hi))
	default:
		return v.num, true
	}
	return nil, false
}

func (d *strictDecoder) decodeStruct(p *field.Path, v *value, out reflect.Value) {
	if v.kind != kindObject {
		d.wrongType(p, v, "an object")
		return
	}
	fields := jsonFields(out.Type())
	seen := make(map[string]bool, len(v.members))
	for _, m := range v.members {
		if m.bad != "" {
			d.fail(p, m.line, m.bad)
			continue
		}
		fp := childPath(p, m.name)
		if seen[m.name] {
			d.fail(fp, m.line, MsgDuplicateField)
			continue
		}
		seen[m.name] = true
		index, ok := fields[m.name]
		if !ok {
			d.fail(fp, m.line, MsgUnknownField)
			continue
		}
		d.decode(fp, m.val, out.FieldByIndex(index))
	}
}

// jsonFields maps the JSON names of t's fields, embedded structs without a
// name (metav1.TypeMeta `json:",inline"`) included, to their field indexes.
func jsonFields(t reflect.Type) map[string][]int {
	fields := map[string][]int{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			for n, idx := range jsonFields(f.Type) {
				fields[n] = append([]int{i}, idx...)
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		fields[name] = []int{i}
	}
	return fields
}

var plainKey = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// childPath names a key; one that would read ambiguously in a path (empty,
// dots, brackets, spaces) is quoted.
func childPath(p *field.Path, name string) *field.Path {
	if !plainKey.MatchString(name) {
		name = strconv.Quote(name)
	}
	if p == nil {
		return field.NewPath(name)
	}
	return p.Child(name)
}

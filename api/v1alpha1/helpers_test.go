package v1alpha1

import (
	"errors"
	"strings"
	"testing"
)

func ptr[T any](v T) *T { return &v }

// checkErr asserts that err is a *ConfigError with exactly len(want)
// problems, the i-th of which contains want[i] (a field path and reason).
// want == nil asserts err == nil.
func checkErr(t *testing.T, err error, want []string) {
	t.Helper()
	if len(want) == 0 {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("no error, want %q", want)
	}
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("error %T %v is not a *ConfigError", err, err)
	}
	if len(ce.Errs) != len(want) {
		t.Fatalf("got %d problems, want %d:\n got: %v\nwant: %q", len(ce.Errs), len(want), err, want)
	}
	for i, w := range want {
		if got := ce.Errs[i].Error(); !strings.Contains(got, w) {
			t.Errorf("problem %d:\n got: %s\nwant substring: %s", i, got, w)
		}
	}
}

// checkWarnings asserts that every want is a substring of some warning and
// that there are exactly len(want) warnings.
func checkWarnings(t *testing.T, warns []string, want ...string) {
	t.Helper()
	if len(warns) != len(want) {
		t.Fatalf("got %d warnings %q, want %d matching %q", len(warns), warns, len(want), want)
	}
	for i, w := range want {
		if !strings.Contains(warns[i], w) {
			t.Errorf("warning %d:\n got: %s\nwant substring: %s", i, warns[i], w)
		}
	}
}

package soak

import (
	"fmt"
	"sync"

	"k8s.io/klog/v2"
)

// Errors is a logger that drops info lines and counts error lines, keeping
// the first few. A soak logs thousands of lines; a test logger (ktesting)
// would keep them all in memory and hide a leak behind its own growth.
type Errors struct {
	mu    sync.Mutex
	n     int
	first []string
}

// Logger returns a logger whose error lines go to e.
func (e *Errors) Logger() klog.Logger { return klog.New(errorSink{e}) }

// Count is the number of error lines logged.
func (e *Errors) Count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n
}

// First are the first error lines logged (at most 10).
func (e *Errors) First() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.first...)
}

type errorSink struct{ e *Errors }

func (s errorSink) Init(klog.RuntimeInfo)          {}
func (s errorSink) Enabled(int) bool               { return false }
func (s errorSink) Info(int, string, ...any)       {}
func (s errorSink) WithValues(...any) klog.LogSink { return s }
func (s errorSink) WithName(string) klog.LogSink   { return s }
func (s errorSink) Error(err error, msg string, kv ...any) {
	s.e.mu.Lock()
	defer s.e.mu.Unlock()
	s.e.n++
	if len(s.e.first) < 10 {
		s.e.first = append(s.e.first, fmt.Sprintf("%s: %v %v", msg, err, kv))
	}
}

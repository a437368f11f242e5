package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"
	"k8s.io/klog/v2"
)

// envDefault returns the value of the environment variable env when it is
// set and non-empty, else def. Flags given on the command line still win.
func envDefault(env, def string) string {
	if v, ok := os.LookupEnv(env); ok && v != "" {
		return v
	}
	return def
}

// stringFlag registers a string flag whose default comes from env when set,
// and names the variable in the help text.
func stringFlag(fs *pflag.FlagSet, p *string, name, shorthand, env, def, usage string) {
	if env != "" {
		usage = fmt.Sprintf("%s (env %s)", usage, env)
	}
	fs.StringVarP(p, name, shorthand, envDefault(env, def), usage)
}

// newFlagSet returns a flag set whose errors are returned, not printed and
// exited on, so the caller decides the exit code.
func newFlagSet(name string) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SortFlags = false
	fs.SetOutput(os.Stderr)
	return fs
}

// parseFlags parses args; --help prints usage and returns errHelp.
func parseFlags(fs *pflag.FlagSet, args []string, usage string) error {
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fmt.Fprintln(fs.Output(), "\nFlags:")
		fmt.Fprint(fs.Output(), fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		if err == pflag.ErrHelp {
			return errHelp
		}
		return &exitError{code: exitUsage, err: err}
	}
	if fs.NArg() > 0 {
		return &exitError{code: exitUsage, err: fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))}
	}
	return nil
}

// errHelp is returned after --help printed the usage; the exit code is 0.
var errHelp = &exitError{code: 0, err: fmt.Errorf("help requested")}

// logFlags logs every flag's effective value (from the command line, the
// environment or its default) once at start, so a log shows how it ran.
func logFlags(logger klog.Logger, fs *pflag.FlagSet) {
	var kv []any
	fs.VisitAll(func(f *pflag.Flag) {
		kv = append(kv, f.Name, f.Value.String())
	})
	logger.Info("Effective flags", kv...)
}

package main

import (
	"fmt"
	"os"
	"strconv"

	"github.com/spf13/pflag"
	logsapi "k8s.io/component-base/logs/api/v1"
	_ "k8s.io/component-base/logs/json/register" // --logging-format=json
)

// addLogFlags registers Kubernetes' logging flags (-v, --vmodule,
// --logging-format and the rest of k8s.io/component-base/logs); LOG_VERBOSITY
// and LOG_FORMAT set their defaults, as the Helm values logVerbosity and
// logFormat do.
func addLogFlags(fs *pflag.FlagSet) (*logsapi.LoggingConfiguration, error) {
	c := logsapi.NewLoggingConfiguration()
	if v := envDefault("LOG_VERBOSITY", ""); v != "" {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return nil, &exitError{code: exitUsage, err: fmt.Errorf("LOG_VERBOSITY=%q: want a number (klog's -v level): %w", v, err)}
		}
		c.Verbosity = logsapi.VerbosityLevel(n)
	}
	c.Format = envDefault("LOG_FORMAT", c.Format)
	logsapi.AddFlags(c, fs)
	for _, name := range []string{"v", "logging-format"} {
		if f := fs.Lookup(name); f != nil {
			f.Usage += " (env " + map[string]string{"v": "LOG_VERBOSITY", "logging-format": "LOG_FORMAT"}[name] + ")"
		}
	}
	return c, nil
}

// applyLogging validates and applies c to klog. Tests run the plugin more
// than once in a process: the same configuration again is no error.
func applyLogging(c *logsapi.LoggingConfiguration) error {
	logsapi.ReapplyHandling = logsapi.ReapplyHandlingIgnoreUnchanged
	opts := &logsapi.LoggingOptions{ErrorStream: os.Stderr, InfoStream: os.Stderr}
	if err := logsapi.ValidateAndApplyWithOptions(c, opts, nil); err != nil {
		return &exitError{code: exitUsage, err: fmt.Errorf("logging flags: %w", err)}
	}
	return nil
}

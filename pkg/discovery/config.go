package discovery

import "github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"

// ConfigLoader returns the configuration to use now and its warnings; see
// WithConfigLoader.
type ConfigLoader func() (*v1alpha1.DiscoveryConfig, []string, error)

// LoadConfig is how both modes and the discover command read their
// configuration: path "" (no configuration file given) is the built-in
// default, anything else is read with v1alpha1.LoadDiscoveryConfig. A file
// that is missing, unreadable, empty or comment-only is an error, never the
// default: at start the plugin refuses to run, and a Watcher keeps its last
// good configuration.
func LoadConfig(path string) (*v1alpha1.DiscoveryConfig, []string, error) {
	if path == "" {
		return v1alpha1.DefaultDiscoveryConfig(), nil, nil
	}
	return v1alpha1.LoadDiscoveryConfig(path)
}

// FileConfigLoader is the ConfigLoader of a plugin: before every scan it
// asks path which file to read (the choice may change at run time, e.g.
// when the old plugin's config.json appears) and loads it with LoadConfig.
func FileConfigLoader(path func() string) ConfigLoader {
	return func() (*v1alpha1.DiscoveryConfig, []string, error) { return LoadConfig(path()) }
}

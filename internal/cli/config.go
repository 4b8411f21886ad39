package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/asyncreply/asyncreply/gateway"
)

// A config file holds the same settings as the flags, under the flags'
// names, so that one reference serves both:
//
//	upstream: http://127.0.0.1:3000
//	owner: upstream:/whoami
//	wait: 2s
//	async:
//	  - GET /reports/{id}
//	  - pattern: POST /exports
//	    timeout: 1h
//	    retention: 168h
//
// Each async route is a pattern, or a mapping with its own wait, timeout
// and retention. Precedence: command line, then environment, then file,
// then defaults. gateway, worker and migrate read the same file, so a
// setting one of them has no use for (async, for a worker) is ignored by
// it; a setting none of them knows is an error.

// configFlag is the flag naming the config file.
const configFlag = "config"

// configPath finds --config in args, else in the environment: the file is
// read before the flags, which override it.
func configPath(fs *flag.FlagSet, args []string, getenv func(string) string) string {
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" || !strings.HasPrefix(arg, "-") {
			break
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		if name == configFlag {
			if hasValue {
				return value
			}
			if i+1 < len(args) {
				return args[i+1]
			}
			break
		}
		// A flag given its value as the next argument ("--upstream URL")
		// is read past it, as package flag does: the value is not the end
		// of the flags.
		if f := fs.Lookup(name); f != nil && !hasValue && !isBoolFlag(f) {
			i++
		}
	}
	return getenv(envName(configFlag))
}

// applyConfigFile sets c's flags from the YAML file at path.
func (c *command) applyConfigFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("--config %s: %w", path, err)
	}
	if len(doc.Content) == 0 {
		return nil // an empty file
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("--config %s:%d: want a mapping of settings such as 'upstream: http://127.0.0.1:3000'", path, root.Line)
	}
	var errs []error
	for i := 0; i+1 < len(root.Content); i += 2 {
		key, value := root.Content[i], root.Content[i+1]
		if err := c.applySetting(key.Value, value); err != nil {
			errs = append(errs, fmt.Errorf("--config %s:%d: %s: %w", path, key.Line, key.Value, err))
		}
	}
	return errors.Join(errs...)
}

func (c *command) applySetting(name string, value *yaml.Node) error {
	if name == configFlag {
		return errors.New("a config file cannot name another")
	}
	f := c.Lookup(name)
	if f == nil {
		if knownSettings[name] {
			return nil // another command's
		}
		return fmt.Errorf("unknown setting; the settings are the flags of 'asyncreply gateway --help', without the dashes")
	}
	switch value.Kind {
	case yaml.ScalarNode:
		if err := f.Value.Set(value.Value); err != nil {
			return fmt.Errorf("invalid value %q: %w", value.Value, err)
		}
		return nil
	case yaml.SequenceNode:
		r, ok := f.Value.(repeatable)
		if !ok {
			return errors.New("takes one value, not a list")
		}
		for _, item := range value.Content {
			var err error
			switch routes, isRoutes := r.(*routeList); {
			case isRoutes && item.Kind == yaml.MappingNode:
				err = routes.setMapping(item)
			case item.Kind == yaml.ScalarNode:
				if err = r.Set(item.Value); err != nil {
					err = fmt.Errorf("invalid value %q: %w", item.Value, err)
				}
			default:
				err = errors.New("want a list of values")
			}
			if err != nil {
				return fmt.Errorf("line %d: %w", item.Line, err)
			}
		}
		r.layerEnded() // the environment and the command line replace the file's list
		return nil
	default:
		return errors.New("want a value or a list of values")
	}
}

// knownSettings are the settings of every command that reads a config file.
var knownSettings = map[string]bool{}

func init() {
	for _, c := range []*command{first(gatewayCommand(io.Discard)), first(workerCommand(io.Discard)), first(migrateCommand(io.Discard))} {
		c.VisitAll(func(f *flag.Flag) { knownSettings[f.Name] = true })
	}
}

func first[T, U any](t T, _ U) T { return t }

// routeList is the repeatable --async flag: patterns on the command line,
// patterns or mappings with per-route settings in a config file.
type routeList struct{ list[gateway.Route] }

func (l *routeList) String() string {
	if l == nil {
		return ""
	}
	return l.join(func(r gateway.Route) string { return r.Pattern })
}

func (l *routeList) Set(pattern string) error {
	if pattern == "" {
		return errors.New("must not be empty")
	}
	l.add(gateway.Route{Pattern: pattern})
	return nil
}

// setMapping adds a route given as {pattern, wait, timeout, retention,
// notify}.
func (l *routeList) setMapping(n *yaml.Node) error {
	var r gateway.Route
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, value := n.Content[i], n.Content[i+1]
		if value.Kind != yaml.ScalarNode {
			return fmt.Errorf("route setting %s: want a single value", key.Value)
		}
		var d *time.Duration
		switch key.Value {
		case "pattern":
			r.Pattern = value.Value
			continue
		case "notify":
			r.Notify = value.Value
			continue
		case "wait":
			d = &r.Wait
		case "timeout":
			d = &r.Timeout
		case "retention":
			d = &r.Retention
		default:
			return fmt.Errorf("unknown route setting %q; a route has pattern, wait, timeout, retention and notify", key.Value)
		}
		parsed, err := time.ParseDuration(value.Value)
		if err != nil {
			return fmt.Errorf("route setting %s: %q is not a duration such as 30s or 1h", key.Value, value.Value)
		}
		*d = parsed
	}
	if r.Pattern == "" {
		return errors.New("a route needs a pattern, e.g. 'pattern: GET /reports/{id}'")
	}
	l.add(r)
	return nil
}

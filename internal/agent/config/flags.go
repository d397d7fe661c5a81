package config

import (
	"flag"
	"regexp"
	"strings"
)

// envFlags registers flags whose default comes from an env var, so that a
// flag on the command line wins.
type envFlags struct {
	fs     *flag.FlagSet
	getenv func(string) string
	noEnv  bool // enroll: flags only, no env vars
}

func (e *envFlags) str(p *string, name, env, def, usage string) {
	if v := e.getenv(env); v != "" && !e.noEnv {
		def = v
	}
	e.fs.StringVar(p, name, def, usage+" (env "+env+")")
}

func (e *envFlags) list(l *listFlag, name, env, usage string) {
	if e.noEnv {
		e.fs.Var(l, name, usage)
		return
	}
	if v := e.getenv(env); v != "" {
		for _, it := range strings.Split(v, ",") {
			if it = strings.TrimSpace(it); it != "" {
				l.vals = append(l.vals, it)
			}
		}
		l.fromEnv = true
	}
	e.fs.Var(l, name, usage+" (env "+env+", comma-separated)")
}

// listFlag is a repeatable flag. Values seeded from the environment are
// replaced by the first command-line occurrence.
type listFlag struct {
	vals    []string
	fromEnv bool
}

func (l *listFlag) String() string { return strings.Join(l.vals, ",") }

func (l *listFlag) Set(v string) error {
	if l.fromEnv {
		l.vals, l.fromEnv = nil, false
	}
	l.vals = append(l.vals, v)
	return nil
}

// allowFlags are the four allowlist flags shared by run mode and enroll
// (which writes them into agent.env).
type allowFlags struct {
	execProbe, configDest, reloadUnit, reloadExec listFlag
}

func (a *allowFlags) register(e *envFlags) {
	e.list(&a.execProbe, "allow-exec-probe", "MESHANICS_ALLOW_EXEC_PROBE", "absolute binary an exec probe may run (repeatable)")
	e.list(&a.configDest, "allow-config-dest", "MESHANICS_ALLOW_CONFIG_DEST", "directory a config file may be placed under (repeatable)")
	e.list(&a.reloadUnit, "allow-reload-unit", "MESHANICS_ALLOW_RELOAD_UNIT", "systemd unit a reload may reload-or-restart (repeatable)")
	e.list(&a.reloadExec, "allow-reload-exec", "MESHANICS_ALLOW_RELOAD_EXEC", "absolute binary an exec reload may run (repeatable)")
}

const maxAllowEntries = 64

var unitRE = regexp.MustCompile(`^[A-Za-z0-9:_.\\@-]{1,240}\.(service|socket|target|timer|path|mount)$`)

func (a *allowFlags) validate() (Allowlists, error) {
	var out Allowlists
	var err error
	if out.ExecProbe, err = absPaths("-allow-exec-probe", a.execProbe.vals); err != nil {
		return out, err
	}
	if out.ConfigDest, err = absPaths("-allow-config-dest", a.configDest.vals); err != nil {
		return out, err
	}
	for _, d := range out.ConfigDest {
		if d == "/" {
			return out, errf("-allow-config-dest", `"/" would allow every path; name the directories`)
		}
	}
	if out.ReloadExec, err = absPaths("-allow-reload-exec", a.reloadExec.vals); err != nil {
		return out, err
	}
	if len(a.reloadUnit.vals) > maxAllowEntries {
		return out, errf("-allow-reload-unit", "at most %d entries", maxAllowEntries)
	}
	for _, u := range a.reloadUnit.vals {
		if !unitRE.MatchString(u) {
			return out, errf("-allow-reload-unit", "%q is not a systemd unit name (e.g. nginx.service)", truncate(u))
		}
	}
	out.ReloadUnit = a.reloadUnit.vals
	return out, nil
}

func absPaths(flagName string, vals []string) ([]string, error) {
	if len(vals) > maxAllowEntries {
		return nil, errf(flagName, "at most %d entries", maxAllowEntries)
	}
	for _, v := range vals {
		if !isAbsClean(v) || len(v) > 4096 {
			return nil, errf(flagName, "%q must be an absolute clean path", truncate(v))
		}
	}
	return vals, nil
}

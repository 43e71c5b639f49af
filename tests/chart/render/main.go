// render: renders a Helm 3 chart the way `helm template` does, for the chart tests (Helm cannot be installed here).
//
// It follows Helm 3's engine (pkg/engine): every file under templates/ is parsed
// into one template set named "<chart>/templates/<path>", files whose base name
// starts with "_" only define templates, NOTES.txt is rendered on its own, the
// function map is sprig's text map without env/expandenv plus Helm's include,
// tpl, required and toYaml, missing keys render as empty ("missingkey=zero",
// then "<no value>" removed). Values are values.yaml coalesced with -f files
// and --set/--set-string overrides (a null override deletes the key), parsed
// with sigs.k8s.io/yaml as Helm does (so numbers are float64), then validated
// against values.schema.json with gojsonschema, Helm 3's validator.
//
// Usage:
//
//	render [-f values.yaml]... [--set k=v]... [--set-string k=v]...
//	       [--name NAME] [--namespace NS] [--kube-version vX.Y.Z] [--notes] CHART_DIR
//
// Prints a multi-document YAML stream ("---" + "# Source: <template>" per
// non-empty template) or, with --notes, the rendered NOTES.txt. Exit status 1
// with the reason on stderr on any error (bad values, a failing `required`).
package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	"github.com/xeipuuv/gojsonschema"
	"sigs.k8s.io/yaml"
)

// Helm bounds include/tpl recursion the same way (engine.go, recursionMaxNums).
const recursionMax = 1000

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// kubeVersion mirrors chartutil.KubeVersion's fields and String().
type kubeVersion struct {
	Version    string
	Major      string
	Minor      string
	GitVersion string
}

func (k kubeVersion) String() string { return k.Version }

// apiVersions mirrors chartutil.VersionSet: templates call .Capabilities.APIVersions.Has.
type apiVersions []string

func (v apiVersions) Has(apiVersion string) bool {
	for _, x := range v {
		if x == apiVersion {
			return true
		}
	}
	return false
}

type capabilities struct {
	KubeVersion kubeVersion
	APIVersions apiVersions
	HelmVersion map[string]string
}

type options struct {
	valueFiles  []string
	sets        []string
	setStrings  []string
	name        string
	namespace   string
	kubeVersion string
	notes       bool
	chartDir    string
}

func parseArgs(args []string) (options, error) {
	o := options{name: "release", namespace: "default", kubeVersion: "v1.29.0"}
	next := func(i *int, flag string) (string, error) {
		if *i+1 >= len(args) {
			return "", fmt.Errorf("%s needs a value", flag)
		}
		*i++
		return args[*i], nil
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		var err error
		var v string
		switch {
		case a == "-f" || a == "--values":
			v, err = next(&i, a)
			o.valueFiles = append(o.valueFiles, v)
		case a == "--set":
			v, err = next(&i, a)
			o.sets = append(o.sets, v)
		case a == "--set-string":
			v, err = next(&i, a)
			o.setStrings = append(o.setStrings, v)
		case a == "--name":
			o.name, err = next(&i, a)
		case a == "--namespace" || a == "-n":
			o.namespace, err = next(&i, a)
		case a == "--kube-version":
			o.kubeVersion, err = next(&i, a)
		case a == "--notes":
			o.notes = true
		case strings.HasPrefix(a, "-"):
			return o, fmt.Errorf("unknown option %q", a)
		default:
			if o.chartDir != "" {
				return o, fmt.Errorf("more than one chart directory (%q, %q)", o.chartDir, a)
			}
			o.chartDir = a
		}
		if err != nil {
			return o, err
		}
	}
	if o.chartDir == "" {
		return o, errors.New("usage: render [-f values.yaml]... [--set k=v]... [--set-string k=v]... [--name NAME] [--namespace NS] [--kube-version vX.Y.Z] [--notes] CHART_DIR")
	}
	return o, nil
}

func readYAMLMap(path string) (map[string]interface{}, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m := map[string]interface{}{}
	if err := yaml.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if m == nil {
		m = map[string]interface{}{}
	}
	return m, nil
}

// coalesce merges src (the user's values) over dst (defaults) like Helm's
// chartutil.CoalesceTables: maps merge key by key, anything else replaces,
// and a null in src removes the key.
func coalesce(dst, src map[string]interface{}) map[string]interface{} {
	if dst == nil {
		dst = map[string]interface{}{}
	}
	for k, sv := range src {
		if sv == nil {
			delete(dst, k)
			continue
		}
		sm, sIsMap := sv.(map[string]interface{})
		dm, dIsMap := dst[k].(map[string]interface{})
		if sIsMap && dIsMap {
			dst[k] = coalesce(dm, sm)
		} else {
			dst[k] = sv
		}
	}
	return dst
}

// splitUnescaped splits s on sep, honouring backslash escapes (Helm's strvals: "a\.b=c", "x=1\,2").
func splitUnescaped(s string, sep byte) []string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\\' && i+1 < len(s) {
			cur.WriteByte(c)
			cur.WriteByte(s[i+1])
			i++
			continue
		}
		if c == sep {
			parts = append(parts, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(c)
	}
	return append(parts, cur.String())
}

func unescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// typedValue follows strvals.typedVal: true/false, null and integers are typed, the rest are strings.
func typedValue(v string, asString bool) interface{} {
	if asString {
		return v
	}
	switch strings.ToLower(v) {
	case "true":
		return true
	case "false":
		return false
	case "null":
		return nil
	}
	if v == "0" || (len(v) > 0 && v[0] != '0') {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return n
		}
	}
	return v
}

// parseSet turns one --set argument ("a.b=1,c[0].d=x,e={p,q}") into a values tree.
func parseSet(arg string, asString bool) (map[string]interface{}, error) {
	out := map[string]interface{}{}
	for _, assignment := range splitTopLevel(arg) {
		kv := strings.SplitN(assignment, "=", 2)
		if len(kv) != 2 || kv[0] == "" {
			return nil, fmt.Errorf("--set %q: key %q has no value", arg, assignment)
		}
		var val interface{}
		raw := kv[1]
		if !asString && strings.HasPrefix(raw, "{") && strings.HasSuffix(raw, "}") {
			list := []interface{}{}
			if inner := raw[1 : len(raw)-1]; inner != "" {
				for _, item := range splitUnescaped(inner, ',') {
					list = append(list, typedValue(unescape(item), false))
				}
			}
			val = list
		} else {
			val = typedValue(unescape(raw), asString)
		}
		if err := setPath(out, splitUnescaped(kv[0], '.'), val); err != nil {
			return nil, fmt.Errorf("--set %q: %w", arg, err)
		}
	}
	return out, nil
}

// splitTopLevel splits on commas outside {...} lists.
func splitTopLevel(s string) []string {
	var parts []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '{':
			depth++
		case '}':
			depth--
		case ',':
			if depth == 0 {
				parts = append(parts, s[start:i])
				start = i + 1
			}
		}
	}
	return append(parts, s[start:])
}

func setPath(m map[string]interface{}, keys []string, val interface{}) error {
	key := unescape(keys[0])
	index := -1
	if open := strings.IndexByte(key, '['); open > 0 && strings.HasSuffix(key, "]") {
		n, err := strconv.Atoi(key[open+1 : len(key)-1])
		if err != nil || n < 0 || n > 65536 {
			return fmt.Errorf("bad list index in %q", key)
		}
		key, index = key[:open], n
	}
	last := len(keys) == 1
	if index < 0 {
		if last {
			m[key] = val
			return nil
		}
		child, ok := m[key].(map[string]interface{})
		if !ok {
			child = map[string]interface{}{}
			m[key] = child
		}
		return setPath(child, keys[1:], val)
	}
	list, _ := m[key].([]interface{})
	for len(list) <= index {
		list = append(list, nil)
	}
	m[key] = list
	if last {
		list[index] = val
		return nil
	}
	child, ok := list[index].(map[string]interface{})
	if !ok {
		child = map[string]interface{}{}
		list[index] = child
	}
	return setPath(child, keys[1:], val)
}

// validateSchema checks the coalesced values like chartutil.ValidateAgainstSchema.
func validateSchema(chartDir string, values map[string]interface{}) error {
	schemaPath := filepath.Join(chartDir, "values.schema.json")
	schema, err := os.ReadFile(schemaPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	doc, err := yaml.Marshal(values)
	if err != nil {
		return err
	}
	docJSON, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return err
	}
	result, err := gojsonschema.Validate(gojsonschema.NewBytesLoader(schema), gojsonschema.NewBytesLoader(docJSON))
	if err != nil {
		return fmt.Errorf("%s: %w", schemaPath, err)
	}
	if result.Valid() {
		return nil
	}
	var b strings.Builder
	b.WriteString("values don't meet the specifications of the schema(s) in the following chart(s):\n")
	for _, e := range result.Errors() {
		fmt.Fprintf(&b, "- %s\n", e)
	}
	return errors.New(strings.TrimSuffix(b.String(), "\n"))
}

// chartMetadata maps Chart.yaml onto the field names templates use (.Chart.Name, .Chart.AppVersion, ...).
func chartMetadata(chartDir string) (map[string]interface{}, error) {
	raw, err := readYAMLMap(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		return nil, err
	}
	names := map[string]string{
		"apiVersion": "APIVersion", "name": "Name", "version": "Version", "kubeVersion": "KubeVersion",
		"description": "Description", "type": "Type", "keywords": "Keywords", "home": "Home",
		"sources": "Sources", "dependencies": "Dependencies", "maintainers": "Maintainers",
		"icon": "Icon", "appVersion": "AppVersion", "deprecated": "Deprecated", "annotations": "Annotations",
	}
	meta := map[string]interface{}{}
	for k, v := range raw {
		field, ok := names[k]
		if !ok {
			return nil, fmt.Errorf("Chart.yaml: unknown field %q", k)
		}
		meta[field] = v
	}
	for _, req := range []string{"APIVersion", "Name", "Version"} {
		if s, _ := meta[req].(string); s == "" {
			return nil, fmt.Errorf("Chart.yaml: %s is required", req)
		}
	}
	if meta["APIVersion"] != "v2" {
		return nil, fmt.Errorf("Chart.yaml: apiVersion %v, want v2 (Helm 3)", meta["APIVersion"])
	}
	return meta, nil
}

type renderer struct {
	tmpl      *template.Template
	chartName string
	chartDir  string
	depth     map[string]int
}

func toYAML(v interface{}) string {
	data, err := yaml.Marshal(v)
	if err != nil {
		// Helm swallows the error the same way; the template sees "".
		return ""
	}
	return strings.TrimSuffix(string(data), "\n")
}

func (r *renderer) funcMap() template.FuncMap {
	f := sprig.TxtFuncMap()
	delete(f, "env")
	delete(f, "expandenv")
	f["toYaml"] = toYAML
	f["required"] = func(msg string, val interface{}) (interface{}, error) {
		if val == nil {
			return val, errors.New(msg)
		}
		if s, ok := val.(string); ok && s == "" {
			return val, errors.New(msg)
		}
		return val, nil
	}
	f["include"] = func(name string, data interface{}) (string, error) {
		if r.depth[name] > recursionMax {
			return "", fmt.Errorf("rendering template has a nested reference name: %s", name)
		}
		r.depth[name]++
		defer func() { r.depth[name]-- }()
		var buf bytes.Buffer
		if err := r.tmpl.ExecuteTemplate(&buf, name, data); err != nil {
			return "", err
		}
		return buf.String(), nil
	}
	f["tpl"] = func(text string, data interface{}) (string, error) {
		// Helm parses the text into a clone of the chart's template set, so
		// named templates stay callable from it.
		clone, err := r.tmpl.Clone()
		if err != nil {
			return "", err
		}
		t, err := clone.New("tpl").Parse(text)
		if err != nil {
			return "", fmt.Errorf("cannot parse template %q: %w", text, err)
		}
		var buf bytes.Buffer
		if err := t.Execute(&buf, data); err != nil {
			return "", fmt.Errorf("error during tpl function execution for %q: %w", text, err)
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}
	return f
}

func run(o options) (string, error) {
	chartDir := filepath.Clean(o.chartDir)
	meta, err := chartMetadata(chartDir)
	if err != nil {
		return "", err
	}
	values, err := readYAMLMap(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		return "", err
	}
	user := map[string]interface{}{}
	for _, f := range o.valueFiles {
		m, err := readYAMLMap(f)
		if err != nil {
			return "", err
		}
		user = coalesceKeepNull(user, m)
	}
	for _, s := range o.sets {
		m, err := parseSet(s, false)
		if err != nil {
			return "", err
		}
		user = coalesceKeepNull(user, m)
	}
	for _, s := range o.setStrings {
		m, err := parseSet(s, true)
		if err != nil {
			return "", err
		}
		user = coalesceKeepNull(user, m)
	}
	values = coalesce(values, user)
	if err := validateSchema(chartDir, values); err != nil {
		return "", err
	}

	kv := strings.TrimPrefix(o.kubeVersion, "v")
	parts := strings.SplitN(kv, ".", 3)
	if len(parts) < 2 {
		return "", fmt.Errorf("--kube-version %q: want vMAJOR.MINOR[.PATCH]", o.kubeVersion)
	}
	caps := capabilities{
		KubeVersion: kubeVersion{Version: "v" + kv, Major: parts[0], Minor: parts[1], GitVersion: "v" + kv},
		APIVersions: apiVersions{"v1", "apps/v1", "batch/v1", "rbac.authorization.k8s.io/v1",
			"node.k8s.io/v1", "apiextensions.k8s.io/v1", "coordination.k8s.io/v1", "policy/v1"},
		HelmVersion: map[string]string{"Version": "v3"},
	}
	chartName, _ := meta["Name"].(string)
	r := &renderer{chartName: chartName, chartDir: chartDir, depth: map[string]int{}}
	r.tmpl = template.New("gotpl").Option("missingkey=zero")
	r.tmpl.Funcs(r.funcMap())

	templatesDir := filepath.Join(chartDir, "templates")
	var files []string
	err = filepath.Walk(templatesDir, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if !info.IsDir() {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	sort.Strings(files)
	names := map[string]string{}
	for _, path := range files {
		rel, _ := filepath.Rel(chartDir, path)
		name := chartName + "/" + filepath.ToSlash(rel)
		data, err := os.ReadFile(path)
		if err != nil {
			return "", err
		}
		if _, err := r.tmpl.New(name).Parse(string(data)); err != nil {
			return "", fmt.Errorf("parse error in %q: %w", name, err)
		}
		names[name] = filepath.Base(path)
	}

	execute := func(name string) (string, error) {
		ctx := map[string]interface{}{
			"Values":       values,
			"Release":      map[string]interface{}{"Name": o.name, "Namespace": o.namespace, "Service": "Helm", "IsInstall": true, "IsUpgrade": false, "Revision": 1},
			"Chart":        meta,
			"Capabilities": caps,
			"Template":     map[string]interface{}{"Name": name, "BasePath": chartName + "/templates"},
			"Files":        map[string]interface{}{},
		}
		var buf bytes.Buffer
		if err := r.tmpl.ExecuteTemplate(&buf, name, ctx); err != nil {
			return "", err
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}

	notesName := chartName + "/templates/NOTES.txt"
	if o.notes {
		if _, ok := names[notesName]; !ok {
			return "", errors.New("the chart has no templates/NOTES.txt")
		}
		return execute(notesName)
	}
	var out strings.Builder
	keys := make([]string, 0, len(names))
	for n := range names {
		keys = append(keys, n)
	}
	sort.Strings(keys)
	for _, name := range keys {
		base := names[name]
		if strings.HasPrefix(base, "_") || name == notesName {
			continue
		}
		text, err := execute(name)
		if err != nil {
			return "", err
		}
		if strings.TrimSpace(text) == "" {
			continue
		}
		fmt.Fprintf(&out, "---\n# Source: %s\n%s", name, strings.TrimLeft(text, "\n"))
		if !strings.HasSuffix(text, "\n") {
			out.WriteString("\n")
		}
	}
	return out.String(), nil
}

// coalesceKeepNull merges --set trees without dropping nulls yet: a "k=null"
// must reach the final coalesce with the chart defaults to delete k there.
func coalesceKeepNull(dst, src map[string]interface{}) map[string]interface{} {
	for k, sv := range src {
		sm, sIsMap := sv.(map[string]interface{})
		dm, dIsMap := dst[k].(map[string]interface{})
		if sIsMap && dIsMap {
			dst[k] = coalesceKeepNull(dm, sm)
		} else {
			dst[k] = sv
		}
	}
	return dst
}

func main() {
	o, err := parseArgs(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(2)
	}
	out, err := run(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
	os.Stdout.WriteString(out)
}

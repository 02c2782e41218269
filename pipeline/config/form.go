package config

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// Components. The parts of the config that have a choice of implementation are written
// {name, args}, as open-metric-learning's configs are:
//
//	loss:
//	  name: group
//	  args: {temperature: 24, iterations: 1, scaling: 1, anchors_per_class: 2}
//	optimizer:
//	  name: radam
//	  args: {lr: 1.5e-4, weight_decay: 6.0e-6}
//	  epochs: 20
//	  lr_schedule: {name: multistep, args: {steps: [], gamma: 0.1}}
//	sampler:
//	  name: balanced
//	  args: {classes_per_batch: 6, samples_per_class: 9}
//	head:
//	  init: pca
//	  classifier_init: {name: means, args: {scale: 64}}
//
// The loss, the optimizer, its learning-rate schedule (optimizer.lr_schedule), the batch sampler
// and the head's two initializations (head.init, head.classifier_init) are components; the other
// keys of their sections (loss.pretrain_epochs, optimizer.epochs, ...) sit beside name and args.
// The args a component takes depend on its name (margin is an arg of triplet, not of group); an
// arg the named implementation does not take, or an arg written beside name instead of under
// args, is an error naming the key, the component and the line. Without a name the current one
// (the default's, the preset's) is meant. Args left out keep their current value. A keyed
// component can be written as its bare name (init: pca); its args then keep their values.
// Written configs hold the args of the named implementation only: the parameters of the others
// do not affect a run.
//
// The Go types keep one field per parameter (LossConfig.Temperature, OptimizerConfig.LR, ...):
// the forms below map the YAML onto them, by the fields' YAML keys.

// compArg is one arg of a component's implementation: its key under args and the YAML key of
// the section's field it sets.
type compArg struct{ name, field string }

type compImpl struct {
	name string
	args []compArg
}

// component is a part of a config section written {name, args}.
type component struct {
	// key is the component's key in its section; "" when name and args are keys of the section.
	key string
	// field is the YAML key of the section's field holding the name; "" when the name is implied
	// (one implementation: the name may be written, and must then be that one).
	field string
	impls []compImpl
}

// form is how the config section at path (a top-level key) is written.
type form struct {
	path  string
	comps []component
}

// plainArgs are args whose key is their field's.
func plainArgs(names ...string) []compArg {
	a := make([]compArg, len(names))
	for i, n := range names {
		a[i] = compArg{n, n}
	}
	return a
}

var (
	lossForm = form{path: "loss", comps: []component{{field: "name", impls: []compImpl{
		{"group", plainArgs("temperature", "iterations", "scaling", "anchors_per_class")},
		{"softmax", nil},
		{"triplet", []compArg{{"margin", "triplet_margin"}}},
		{"contrastive", plainArgs("pos_margin", "neg_margin")},
		{"proxy_anchor", []compArg{{"alpha", "proxy_alpha"}, {"margin", "proxy_margin"}}},
		{"multi_similarity", []compArg{{"alpha", "ms_alpha"}, {"beta", "ms_beta"}, {"base", "ms_base"}, {"margin", "ms_margin"}}},
	}}}}
	optimizerForm = form{path: "optimizer", comps: []component{
		{field: "name", impls: []compImpl{
			{"adam", plainArgs("lr", "weight_decay")},
			{"adamw", plainArgs("lr", "weight_decay")},
			{"radam", plainArgs("lr", "weight_decay")},
		}},
		{key: "lr_schedule", impls: []compImpl{{"multistep", []compArg{{"steps", "lr_steps"}, {"gamma", "lr_gamma"}}}}},
	}}
	samplerForm = form{path: "sampler", comps: []component{{impls: []compImpl{
		{"balanced", plainArgs("classes_per_batch", "samples_per_class")},
	}}}}
	headForm = form{path: "head", comps: []component{
		{key: "init", field: "init", impls: []compImpl{{"pca", nil}, {"random", nil}}},
		{key: "classifier_init", field: "classifier_init", impls: []compImpl{
			{"means", []compArg{{"scale", "classifier_scale"}}},
			{"random", nil},
		}},
	}}
	// componentForms are the sections written with components.
	componentForms = []*form{&headForm, &lossForm, &samplerForm, &optimizerForm}
)

// The section types as plain structs: decoded and encoded by field, without the methods below.
type (
	lossFields      LossConfig
	optimizerFields OptimizerConfig
	samplerFields   SamplerConfig
	headFields      HeadConfig
)

// UnmarshalYAML reads the loss section in the {name, args} form.
func (l *LossConfig) UnmarshalYAML(n *yaml.Node) error { return lossForm.decode(n, (*lossFields)(l)) }

// MarshalYAML writes the loss section in the {name, args} form.
func (l LossConfig) MarshalYAML() (any, error) { return lossForm.encode(lossFields(l)) }

// UnmarshalYAML reads the optimizer section in the {name, args} form.
func (o *OptimizerConfig) UnmarshalYAML(n *yaml.Node) error {
	return optimizerForm.decode(n, (*optimizerFields)(o))
}

// MarshalYAML writes the optimizer section in the {name, args} form.
func (o OptimizerConfig) MarshalYAML() (any, error) { return optimizerForm.encode(optimizerFields(o)) }

// UnmarshalYAML reads the sampler section in the {name, args} form.
func (s *SamplerConfig) UnmarshalYAML(n *yaml.Node) error {
	return samplerForm.decode(n, (*samplerFields)(s))
}

// MarshalYAML writes the sampler section in the {name, args} form.
func (s SamplerConfig) MarshalYAML() (any, error) { return samplerForm.encode(samplerFields(s)) }

// UnmarshalYAML reads the head section, its initializations in the {name, args} form.
func (h *HeadConfig) UnmarshalYAML(n *yaml.Node) error { return headForm.decode(n, (*headFields)(h)) }

// MarshalYAML writes the head section, its initializations in the {name, args} form.
func (h HeadConfig) MarshalYAML() (any, error) { return headForm.encode(headFields(h)) }

func (c *component) impl(name string) (compImpl, bool) {
	i := slices.IndexFunc(c.impls, func(im compImpl) bool { return im.name == name })
	if i < 0 {
		return compImpl{}, false
	}
	return c.impls[i], true
}

func (c *component) names() []string {
	n := make([]string, len(c.impls))
	for i, im := range c.impls {
		n[i] = im.name
	}
	return n
}

func (im compImpl) arg(name string) (compArg, bool) {
	i := slices.IndexFunc(im.args, func(a compArg) bool { return a.name == name })
	if i < 0 {
		return compArg{}, false
	}
	return im.args[i], true
}

func (im compImpl) argNames() []string {
	n := make([]string, len(im.args))
	for i, a := range im.args {
		n[i] = a.name
	}
	return n
}

// compPath is the dotted key of component c of f ("loss", "head.classifier_init").
func (f *form) compPath(c *component) string {
	if c.key == "" {
		return f.path
	}
	return f.path + "." + c.key
}

// top is the component whose name and args are keys of the section, nil if none.
func (f *form) top() *component {
	for i := range f.comps {
		if f.comps[i].key == "" {
			return &f.comps[i]
		}
	}
	return nil
}

// keyed is the component with the section key key ("" never matches).
func (f *form) keyed(key string) *component {
	for i := range f.comps {
		if key != "" && f.comps[i].key == key {
			return &f.comps[i]
		}
	}
	return nil
}

// nameOf is the component whose name is the field with YAML key key.
func (f *form) nameOf(key string) *component {
	for i := range f.comps {
		if f.comps[i].field == key {
			return &f.comps[i]
		}
	}
	return nil
}

// argOf is the component one of whose implementations has an arg stored in the field with YAML
// key key.
func (f *form) argOf(key string) *component {
	for i := range f.comps {
		for _, im := range f.comps[i].impls {
			for _, a := range im.args {
				if a.field == key {
					return &f.comps[i]
				}
			}
		}
	}
	return nil
}

// current is the implementation of c that the section struct rv names, false if none.
func (c *component) current(rv reflect.Value) (compImpl, bool) {
	if c.field == "" {
		return c.impls[0], true
	}
	fv, ok := fieldByKey(rv, c.field)
	if !ok {
		return compImpl{}, false
	}
	return c.impl(fv.String())
}

// fieldByKey is the field of the struct rv with YAML key key.
func fieldByKey(rv reflect.Value, key string) (reflect.Value, bool) {
	t := rv.Type()
	for i := 0; i < t.NumField(); i++ {
		if yamlName(t.Field(i)) == key {
			return rv.Field(i), true
		}
	}
	return reflect.Value{}, false
}

// sectionDecoder is one decoding of a section into the struct rv.
type sectionDecoder struct {
	f    *form
	rv   reflect.Value
	errs []string
	set  map[string]int // field key -> line it was set at
}

// decode reads the YAML mapping n into the section struct *v over its current values. Errors
// are a *yaml.TypeError whose messages start "line N: " (see yamlError).
func (f *form) decode(n *yaml.Node, v any) error {
	d := &sectionDecoder{f: f, rv: reflect.ValueOf(v).Elem(), set: map[string]int{}}
	if n.Kind != yaml.MappingNode {
		d.typeError(n, f.path, "mapping")
		return &yaml.TypeError{Errors: d.errs}
	}
	pairs, errs := mappingPairs(n)
	d.errs = errs

	top := f.top()
	var topName *yaml.Node
	for _, p := range pairs {
		if top != nil && p.k.Value == "name" {
			topName = p.v
		}
	}
	for _, p := range pairs {
		key := p.k.Value
		c := f.keyed(key)
		switch {
		case top != nil && key == "args":
			if im, ok := d.pick(top, topName, p.k.Line); ok {
				d.args(top, im, p.v)
			}
		case top != nil && key == "name" && top.field == "":
			d.pick(top, p.v, p.k.Line)
		case top != nil && key == "name":
			d.setField(top.field, p.v, f.path+".name")
		case c != nil:
			d.component(c, p)
		case f.argOf(key) != nil:
			d.errs = append(d.errs, hinted(fmt.Sprintf("line %d: unknown key %q", p.k.Line, f.path+"."+key), f.argHint(key)))
		default:
			if _, ok := fieldByKey(d.rv, key); !ok {
				d.errs = append(d.errs, hinted(fmt.Sprintf("line %d: unknown key %q", p.k.Line, f.path+"."+key), f.keysHint(d.rv)))
				continue
			}
			d.setField(key, p.v, f.path+"."+key)
		}
	}
	// An empty list is no list: the written `[]` of a nil list loads back as nil.
	for i := 0; i < d.rv.NumField(); i++ {
		if fv := d.rv.Field(i); fv.Kind() == reflect.Slice && fv.Len() == 0 && !fv.IsNil() && fv.CanSet() {
			fv.Set(reflect.Zero(fv.Type()))
		}
	}
	if len(d.errs) == 0 {
		return nil
	}
	slices.SortStableFunc(d.errs, func(a, b string) int { return errLine(a) - errLine(b) })
	return &yaml.TypeError{Errors: d.errs}
}

// argHint says where the section key key, the field of a component's arg, is written: under the
// component's args, as which arg of which implementations.
func (f *form) argHint(key string) string {
	c := f.argOf(key)
	path := f.compPath(c)
	var where []string
	for _, im := range c.impls {
		for _, a := range im.args {
			if a.field == key {
				where = append(where, fmt.Sprintf("%s.args.%s of %s %s", path, a.name, path, im.name))
			}
		}
	}
	return fmt.Sprintf("a component's parameters go under its args: %s is %s", key, strings.Join(where, ", "))
}

// typeError records that the node n at the dotted key is not of the kind want ("mapping",
// "component"), in yaml.v3's words so that yamlError rewrites it.
func (d *sectionDecoder) typeError(n *yaml.Node, key, want string) {
	got := n.ShortTag()
	if n.Kind == yaml.ScalarNode {
		got += " `" + n.Value + "`"
	}
	d.errs = append(d.errs, fmt.Sprintf("line %d: key %s: cannot unmarshal %s into %s", n.Line, key, got, want))
}

// setField decodes v into the field with YAML key field; key is the dotted key for messages.
func (d *sectionDecoder) setField(field string, v *yaml.Node, key string) {
	if line, dup := d.set[field]; dup {
		d.errs = append(d.errs, fmt.Sprintf("line %d: %q is set again (first at line %d)", v.Line, key, line))
		return
	}
	d.set[field] = v.Line
	fv, ok := fieldByKey(d.rv, field)
	if !ok {
		panic(fmt.Sprintf("pipeline: config form of %s names the field %q, which %s lacks", d.f.path, field, d.rv.Type()))
	}
	err := v.Decode(fv.Addr().Interface())
	var te *yaml.TypeError
	switch {
	case errors.As(err, &te):
		for _, e := range te.Errors {
			if m := reErrLine.FindStringSubmatchIndex(e); m != nil && !strings.Contains(e, hintSep) {
				e = e[:m[1]] + "key " + key + ": " + e[m[1]:]
			}
			d.errs = append(d.errs, e)
		}
	case err != nil:
		d.errs = append(d.errs, fmt.Sprintf("line %d: %s: %v", v.Line, key, err))
	}
}

// pick is the implementation of c named by the node name (or, when nil, the current one);
// line is where an error is reported when name is nil.
func (d *sectionDecoder) pick(c *component, name *yaml.Node, line int) (compImpl, bool) {
	path := d.f.compPath(c)
	if name == nil {
		im, ok := c.current(d.rv)
		if !ok {
			fv, _ := fieldByKey(d.rv, c.field)
			d.errs = append(d.errs, hinted(fmt.Sprintf("line %d: %s %q is not one of %s", line, path, fv.String(), strings.Join(c.names(), ", ")),
				namesHint(c, path)))
		}
		return im, ok
	}
	if name.Kind != yaml.ScalarNode {
		if c.field == "" { // else setField reports it
			d.typeError(name, path+".name", "string")
		}
		return compImpl{}, false
	}
	im, ok := c.impl(name.Value)
	if !ok && c.field == "" { // else the name field's type (enum.go) reports it, by setField
		d.errs = append(d.errs, hinted(fmt.Sprintf("line %d: %s %q is not one of %s", name.Line, path, name.Value, strings.Join(c.names(), ", ")),
			namesHint(c, path)))
	}
	return im, ok
}

func namesHint(c *component, path string) string {
	if len(c.impls) == 1 {
		return fmt.Sprintf("the only %s is %s", path, c.impls[0].name)
	}
	return fmt.Sprintf("the %s names are %s", path, strings.Join(c.names(), ", "))
}

// args decodes the args mapping n of implementation im of c.
func (d *sectionDecoder) args(c *component, im compImpl, n *yaml.Node) {
	path := d.f.compPath(c)
	if n.ShortTag() == "!!null" {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.typeError(n, path+".args", "mapping")
		return
	}
	pairs, errs := mappingPairs(n)
	d.errs = append(d.errs, errs...)
	for _, p := range pairs {
		a, ok := im.arg(p.k.Value)
		if !ok {
			d.errs = append(d.errs, hinted(fmt.Sprintf("line %d: unknown key %q: %s %q has no arg %s", p.k.Line, path+".args."+p.k.Value, path, im.name, p.k.Value),
				argsHint(c, path, im, p.k.Value)))
			continue
		}
		d.setField(a.field, p.v, path+".args."+a.name)
	}
}

// argsHint says which args im takes and which implementations of c take the arg name.
func argsHint(c *component, path string, im compImpl, name string) string {
	h := fmt.Sprintf("%s %q takes no args", path, im.name)
	if len(im.args) > 0 {
		h = fmt.Sprintf("the args of %s %q are %s", path, im.name, strings.Join(im.argNames(), ", "))
	}
	var others []string
	for _, o := range c.impls {
		if _, ok := o.arg(name); ok {
			others = append(others, o.name)
		}
	}
	if len(others) > 0 {
		h += fmt.Sprintf("; %s is an arg of %s %s", name, path, strings.Join(others, ", "))
	}
	return h
}

// component decodes the keyed component c written {name, args} or as its bare name.
func (d *sectionDecoder) component(c *component, p yamlPair) {
	path := d.f.compPath(c)
	switch p.v.Kind {
	case yaml.ScalarNode:
		if c.field != "" {
			d.setField(c.field, p.v, path)
		}
		d.pick(c, p.v, p.k.Line)
		return
	case yaml.MappingNode:
	default:
		d.typeError(p.v, path, "component")
		return
	}
	inner, errs := mappingPairs(p.v)
	d.errs = append(d.errs, errs...)
	var name, args *yaml.Node
	for _, q := range inner {
		switch q.k.Value {
		case "name":
			name = q.v
		case "args":
			args = q.v
		default:
			d.errs = append(d.errs, hinted(fmt.Sprintf("line %d: unknown key %q", q.k.Line, path+"."+q.k.Value),
				fmt.Sprintf("%s is {name, args}: the names are %s", path, strings.Join(c.names(), ", "))))
		}
	}
	if name != nil && c.field != "" {
		d.setField(c.field, name, path+".name")
	}
	if im, ok := d.pick(c, name, p.k.Line); ok && args != nil {
		d.args(c, im, args)
	}
}

// keysHint lists the keys of the section as written, and the args of its own component.
func (f *form) keysHint(rv reflect.Value) string {
	h := fmt.Sprintf("the keys under %s are: %s", f.path, strings.Join(writtenKeys(f.path), ", "))
	if top := f.top(); top != nil {
		if im, ok := top.current(rv); ok && len(im.args) > 0 {
			h += fmt.Sprintf("; the args of %s %q are: %s", f.path, im.name, strings.Join(im.argNames(), ", "))
		}
	}
	return h
}

// writtenKeys lists the keys of the mapping at the dotted path in the written default config
// (nil if there is none).
func writtenKeys(path string) []string {
	var n yaml.Node
	if err := n.Encode(DefaultConfig()); err != nil {
		return nil
	}
	cur := &n
	if path != "" {
		for _, k := range strings.Split(path, ".") {
			var next *yaml.Node
			for i := 0; cur.Kind == yaml.MappingNode && i+1 < len(cur.Content); i += 2 {
				if cur.Content[i].Value == k {
					next = cur.Content[i+1]
				}
			}
			if next == nil {
				return nil
			}
			cur = next
		}
	}
	if cur.Kind != yaml.MappingNode {
		return nil
	}
	var keys []string
	for i := 0; i < len(cur.Content); i += 2 {
		keys = append(keys, cur.Content[i].Value)
	}
	return keys
}

func strNode(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s} }

// encode returns the section struct v (of a type without YAML methods) as a YAML mapping with
// its components written {name, args} (bare names for implementations without args), the args
// of the named implementation only. A name no implementation has (Validate rejects it) is
// written without args.
func (f *form) encode(v any) (*yaml.Node, error) {
	var n yaml.Node
	if err := n.Encode(v); err != nil {
		return nil, err
	}
	rv := reflect.ValueOf(v)
	out := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	done := map[*component]bool{}
	emit := func(c *component) error {
		if done[c] {
			return nil
		}
		done[c] = true
		im, ok := c.current(rv)
		if !ok {
			fv, _ := fieldByKey(rv, c.field)
			im = compImpl{name: fv.String()}
		}
		var args *yaml.Node
		if len(im.args) > 0 {
			args = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Style: yaml.FlowStyle}
			for _, a := range im.args {
				fv, _ := fieldByKey(rv, a.field)
				var an yaml.Node
				if err := an.Encode(fv.Interface()); err != nil {
					return err
				}
				args.Content = append(args.Content, strNode(a.name), &an)
			}
		}
		if c.key == "" {
			out.Content = append(out.Content, strNode("name"), strNode(im.name))
			if args != nil {
				out.Content = append(out.Content, strNode("args"), args)
			}
			return nil
		}
		val := strNode(im.name)
		if args != nil {
			val = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Style: yaml.FlowStyle,
				Content: []*yaml.Node{strNode("name"), strNode(im.name), strNode("args"), args}}
		}
		out.Content = append(out.Content, strNode(c.key), val)
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key := n.Content[i].Value
		c := f.nameOf(key)
		if c == nil {
			c = f.argOf(key)
		}
		if c == nil {
			out.Content = append(out.Content, n.Content[i], n.Content[i+1])
			continue
		}
		if err := emit(c); err != nil {
			return nil, err
		}
	}
	for i := range f.comps { // a component whose fields were all left out (omitempty)
		if err := emit(&f.comps[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

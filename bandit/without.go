package bandit

// FeatureKey identifies a feature of an event as the weights see it: its
// namespace index and hashes (under --hash strings and --hash all) and,
// for a number of a JSON array, its position plus 1. Features with equal
// keys have the same name in the same namespace.
type FeatureKey struct {
	NS             byte
	hash, alt, pos uint32
}

func (f feature) key(ns byte) FeatureKey {
	return FeatureKey{NS: ns, hash: f.hash, alt: f.alt, pos: f.pos}
}

// Features calls visit with the key and name of every feature of e, the
// shared example's first, then each action's. The name is VW's audit
// name ("Namespace^name", see [Model.Names]) when e keeps names
// ([Event.SetKeepNames]), else "".
func (e *Event) Features(visit func(k FeatureKey, name string)) {
	var idx []byte
	for _, x := range append([]*Example{&e.shared}, e.actions[:e.n]...) {
		idx = x.indices(idx[:0])
		for _, ns := range idx {
			names := x.groupNames(ns)
			for i, f := range x.group(ns) {
				visit(f.key(ns), names[i])
			}
		}
	}
}

// CopyWithout makes dst a copy of e without the features whose key is k,
// the event e would be had its DSJson line not had that feature: a
// namespace left without features is gone, as VW does not register an
// empty one (a number of an array is left out as if it were 0). It
// reports whether e has such a feature; if not, dst is unchanged and e is
// the event to use. dst must not be e.
func (e *Event) CopyWithout(dst *Event, k FeatureKey) bool {
	if !e.has(k) {
		return false
	}
	dst.Reset()
	dst.SetKeepNames(e.names)
	dst.label, dst.pdrop, dst.SkipLearn = e.label, e.pdrop, e.SkipLearn
	dst.eventID = append(dst.eventID[:0], e.eventID...)
	dst.tag = append(dst.tag[:0], e.tag...)
	var buf [64]byte
	idx := e.shared.copyWithout(&dst.shared, k, buf[:0])
	for _, x := range e.actions[:e.n] {
		idx = x.copyWithout(dst.AddAction(), k, idx)
	}
	dst.changes++
	return true
}

// has reports whether e has a feature whose key is k.
func (e *Event) has(k FeatureKey) bool {
	if e.shared.has(k) {
		return true
	}
	for _, x := range e.actions[:e.n] {
		if x.has(k) {
			return true
		}
	}
	return false
}

func (x *Example) has(k FeatureKey) bool {
	for _, f := range x.group(k.NS) {
		if f.key(k.NS) == k {
			return true
		}
	}
	return false
}

// copyWithout copies x's features but those whose key is k into dst,
// which was reset, closing its namespaces in x's order. Only namespace
// k.NS can hold such features: the others are copied whole. idx is
// scratch memory.
func (x *Example) copyWithout(dst *Example, k FeatureKey, idx []byte) []byte {
	idx = x.indices(idx[:0])
	for _, ns := range idx {
		src := &x.groups[x.slot[ns]-1]
		n := len(dst.groups)
		if n < cap(dst.groups) {
			dst.groups = dst.groups[:n+1]
			dst.groups[n].ns = ns
		} else {
			dst.groups = append(dst.groups, group{ns: ns})
		}
		g := &dst.groups[n]
		g.feats, g.names = append(g.feats[:0], src.feats...), g.names[:0]
		if len(src.names) == len(src.feats) {
			g.names = append(g.names, src.names...)
		}
		if ns == k.NS {
			kept := 0
			for i, f := range g.feats {
				if f.key(ns) != k {
					g.feats[kept] = f
					if len(g.names) > 0 {
						g.names[kept] = g.names[i]
					}
					kept++
				}
			}
			g.feats = g.feats[:kept]
			g.names = g.names[:min(kept, len(g.names))]
			if kept == 0 { // an empty namespace is not registered
				dst.groups = dst.groups[:n]
				continue
			}
		}
		dst.slot[ns] = uint16(n + 1)
		dst.order = append(dst.order, ns)
	}
	return idx
}

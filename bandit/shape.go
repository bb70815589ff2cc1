package bandit

// Shape is what counting an event's features reads of it: how many
// features each namespace of its shared example and of each action
// holds, by namespace index. Building a shape hashes nothing, so the
// features a request would make can be counted ([Policy.CountShape])
// without building its [Event]. The zero Shape is empty and ready to use.
type Shape struct {
	shared []nsSize
	acts   []nsSize // every action's sizes, action after action
	ends   []int    // ends[a]: where action a's sizes end in acts
}

// nsSize is n features added to namespace ns (a namespace may be added
// to more than once: the sizes add up).
type nsSize struct {
	ns byte
	n  int
}

// Reset empties s, keeping its memory.
func (s *Shape) Reset() {
	s.shared, s.acts, s.ends = s.shared[:0], s.acts[:0], s.ends[:0]
}

// AddShared adds n features to namespace ns of the shared example.
func (s *Shape) AddShared(ns byte, n int) {
	if n > 0 {
		s.shared = append(s.shared, nsSize{ns, n})
	}
}

// AddAction adds an action without features; [Shape.AddToAction] adds
// to the last one.
func (s *Shape) AddAction() { s.ends = append(s.ends, len(s.acts)) }

// AddToAction adds n features to namespace ns of the last action added.
func (s *Shape) AddToAction(ns byte, n int) {
	if n > 0 {
		s.acts = append(s.acts, nsSize{ns, n})
		s.ends[len(s.ends)-1] = len(s.acts)
	}
}

// action returns the sizes of action a.
func (s *Shape) action(a int) []nsSize {
	start := 0
	if a > 0 {
		start = s.ends[a-1]
	}
	return s.acts[start:s.ends[a]]
}

// NamespaceIndex is the index VW keys the namespace name by, as
// [Example.Namespace] opens it: the first byte of the name (cut at a NUL),
// ' ' for the default namespace "".
func NamespaceIndex(name string) byte {
	if name == "" {
		return ' '
	}
	return namespaceIndex(name)
}

// shapeOf is e's shape.
func shapeOf(e *Event, s *Shape) {
	s.Reset()
	var idx []byte
	idx = e.shared.indices(idx)
	for _, ns := range idx {
		s.AddShared(ns, len(e.shared.group(ns)))
	}
	for a := range e.n {
		act := e.actions[a]
		s.AddAction()
		idx = act.indices(idx[:0])
		for _, ns := range idx {
			s.AddToAction(ns, len(act.group(ns)))
		}
	}
}

// CountFeatures returns how many features a model of policy pol generates
// to score every action of e, interactions included: the sum over the
// actions of what VW counts for each (see [Prediction.NumFeatures]). It
// is [Policy.CountShape] of e's shape. p is scratch memory.
func (pol *Policy) CountFeatures(e *Event, p *Prediction) int {
	var s Shape
	shapeOf(e, &s)
	return pol.CountShape(&s, p)
}

// CountShape returns how many features a model of policy pol generates
// to score every action of an event of shape s, interactions included
// (what [Policy.CountFeatures] returns for the event). It reads only the
// namespaces' sizes, so it costs little however many interactions there
// are; the count saturates at [math.MaxInt]. p is scratch memory.
func (pol *Policy) CountShape(s *Shape, p *Prediction) int {
	// The interaction terms: a wildcard expands over the namespaces the
	// event has, as prepare does.
	terms := pol.terms
	if pol.wildcard {
		var set nsSet
		for _, x := range s.shared {
			if !pol.ignore[x.ns] {
				set.add(x.ns)
			}
		}
		for _, x := range s.acts {
			if !pol.ignore[x.ns] {
				set.add(x.ns)
			}
		}
		terms = p.cache.compile(pol, set)
	}
	// The shared namespaces' sizes, then each action's added and taken
	// away again.
	var size [256]int
	shared := 0
	for _, x := range s.shared {
		if !pol.ignore[x.ns] {
			size[x.ns] += x.n
			shared += x.n
		}
	}
	if !pol.noConstant {
		size[constantNamespace] = 1
		shared++
	}
	sizeOf := func(ns byte) int { return size[ns] }
	total := 0
	for a := range s.ends {
		act := s.action(a)
		n := shared
		for _, x := range act {
			if !pol.ignore[x.ns] {
				size[x.ns] += x.n
				n += x.n
			}
		}
		for i := range terms {
			n = satAdd(n, termFeatures(&terms[i], sizeOf))
		}
		total = satAdd(total, n)
		for _, x := range act {
			if !pol.ignore[x.ns] {
				size[x.ns] -= x.n
			}
		}
	}
	return total
}

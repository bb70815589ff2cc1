package vtcodec

import (
	"math"
	"unicode/utf8"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// unmarshalRank decodes b into m as proto.Unmarshal does, UTF-8 checks
// included, in two passes: the first checks b and counts the actions,
// namespaces, features and values, the second fills blocks allocated to
// those counts. A Rank request thus costs about ten allocations instead of
// two per feature. The strings point into b, which m then owns. Input the
// decoder does not handle (unknown or mistyped fields, malformed or
// invalid UTF-8 data) goes to proto.Unmarshal, which keeps or reports it.
func unmarshalRank(b []byte, m *personalizerv1.RankRequest) error {
	return new(Blocks).unmarshal(b, m)
}

// Blocks is memory Rank requests are decoded into, reusable: a request
// decoded with [Blocks.Unmarshal] uses it until the next Unmarshal with the
// same Blocks. The zero value is ready to use.
type Blocks struct {
	actions    []personalizerv1.Action
	namespaces []personalizerv1.Namespace
	nsPtrs     []*personalizerv1.Namespace
	features   []personalizerv1.Feature
	featPtrs   []*personalizerv1.Feature
	numbers    []personalizerv1.Feature_NumberValue
	strs       []personalizerv1.Feature_StringValue
	bools      []personalizerv1.Feature_BoolValue
	context    []*personalizerv1.Namespace
	actionPtrs []*personalizerv1.Action
	excluded   []string
}

// Unmarshal is [UnmarshalRank] into bl's memory: the request then uses
// bl, and bl's memory may be handed on to the next request only once m is
// no longer used. A Rank request thus allocates nothing for its messages.
func (bl *Blocks) Unmarshal(b []byte, m *personalizerv1.RankRequest) error { return bl.unmarshal(b, m) }

// Features is the number of features bl holds room for.
func (bl *Blocks) Features() int { return cap(bl.features) }

func (bl *Blocks) unmarshal(b []byte, m *personalizerv1.RankRequest) error {
	m.Reset()
	var count rankDecoder
	if !count.request(b, nil) {
		return proto.Unmarshal(b, m)
	}
	n := count.n
	bl.actions = reuse(bl.actions, n.actions)
	bl.namespaces = reuse(bl.namespaces, n.namespaces)
	bl.nsPtrs = reuse(bl.nsPtrs, n.namespaces)
	bl.features = reuse(bl.features, n.features)
	bl.featPtrs = reuse(bl.featPtrs, n.features)
	bl.numbers = reuse(bl.numbers, n.numbers)
	bl.strs = reuse(bl.strs, n.strs)
	bl.bools = reuse(bl.bools, n.bools)
	d := rankDecoder{
		fill:       true,
		actions:    bl.actions,
		namespaces: bl.namespaces,
		nsPtrs:     bl.nsPtrs,
		features:   bl.features,
		featPtrs:   bl.featPtrs,
		numbers:    bl.numbers,
		strs:       bl.strs,
		bools:      bl.bools,
	}
	if n.context > 0 {
		bl.context = reuse(bl.context, n.context)[:0]
		m.ContextFeatures = bl.context
	}
	if n.actions > 0 {
		bl.actionPtrs = reuse(bl.actionPtrs, n.actions)[:0]
		m.Actions = bl.actionPtrs
	}
	if n.excluded > 0 {
		bl.excluded = reuse(bl.excluded, n.excluded)[:0]
		m.ExcludedActions = bl.excluded
	}
	d.request(b, m) // cannot fail: the first pass checked b
	return nil
}

// reuse returns s resized to n zero elements, in s's memory when it has
// room. The filling pass tells blocks from the counting pass's nil ones,
// so a block is never nil when it has elements to fill.
func reuse[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	s = s[:n]
	clear(s)
	return s
}

// unmarshalRankStream is unmarshalRank for the RankStream wrapper.
func unmarshalRankStream(b []byte, m *personalizerv1.RankStreamRequest) error {
	m.Reset()
	num, typ, n := consumeTag(b)
	if n > 0 && num == 1 && typ == protowire.BytesType {
		if v, k := consumeBytes(b[n:]); k == len(b)-n {
			m.Request = new(personalizerv1.RankRequest)
			return unmarshalRank(v, m.Request)
		}
	}
	return proto.Unmarshal(b, m)
}

// unmarshalLogRanks decodes a LogRanks batch: each entry's request with
// unmarshalRank, the entry's other fields with proto.Unmarshal. Anything
// else (unknown fields, an entry's request given twice, malformed data)
// goes to proto.Unmarshal whole.
func unmarshalLogRanks(b []byte, m *personalizerv1.LogRanksRequest) error {
	m.Reset()
	for rest := b; len(rest) > 0; {
		num, typ, n := consumeTag(rest)
		if n <= 0 || num != 1 || typ != protowire.BytesType {
			return proto.Unmarshal(b, m)
		}
		v, k := protowire.ConsumeBytes(rest[n:])
		if k < 0 {
			return proto.Unmarshal(b, m)
		}
		e, ok := unmarshalLoggedRank(v)
		if !ok {
			return proto.Unmarshal(b, m)
		}
		m.Entries = append(m.Entries, e)
		rest = rest[n+k:]
	}
	return nil
}

// unmarshalLoggedRank decodes one LogRanks entry, or reports false for
// input unmarshalLogRanks leaves to proto.Unmarshal.
func unmarshalLoggedRank(b []byte) (*personalizerv1.LoggedRank, bool) {
	e := new(personalizerv1.LoggedRank)
	var req, others []byte // the request, and the entry's other fields
	seen := false
	for rest := b; len(rest) > 0; {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 {
			return nil, false
		}
		k := protowire.ConsumeFieldValue(num, typ, rest[n:])
		if k < 0 {
			return nil, false
		}
		if num == 1 {
			if seen || typ != protowire.BytesType {
				return nil, false
			}
			req, _ = protowire.ConsumeBytes(rest[n:])
			seen = true
		} else {
			others = append(others, rest[:n+k]...)
		}
		rest = rest[n+k:]
	}
	if len(others) > 0 && proto.Unmarshal(others, e) != nil {
		return nil, false
	}
	if seen {
		e.Request = new(personalizerv1.RankRequest)
		if unmarshalRank(req, e.Request) != nil {
			return nil, false
		}
	}
	return e, true
}

// LoggedRank is a LogRanks entry as [SplitLogRanks] gives it: its request
// left encoded, its other fields decoded.
type LoggedRank struct {
	// Request is the request's bytes, in the batch's memory; nil when the
	// entry has none.
	Request       []byte
	Ranking       []uint32
	Probabilities []float32
	ModelVersion  string
	LearningMode  string
}

// SplitLogRanks appends to dst the entries of b, a LogRanks batch, their
// requests left encoded (to be decoded one by one, and carried by rank
// records as they came), or reports false for a batch it does not take:
// an entry with its request twice (which proto merges), an unknown field,
// a string that is not UTF-8, malformed data. proto.Unmarshal (the codec)
// decodes those, keeping or reporting what they hold. A request's bytes
// are not checked here.
func SplitLogRanks(b []byte, dst []LoggedRank) ([]LoggedRank, bool) {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n <= 0 || num != 1 || typ != protowire.BytesType {
			return dst, false
		}
		v, k := protowire.ConsumeBytes(b[n:])
		if k < 0 {
			return dst, false
		}
		dst = append(dst, LoggedRank{})
		if !splitLoggedRank(v, &dst[len(dst)-1]) {
			return dst, false
		}
		b = b[n+k:]
	}
	return dst, true
}

// splitLoggedRank decodes one entry for SplitLogRanks into e.
func splitLoggedRank(b []byte, e *LoggedRank) bool {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n <= 0 {
			return false
		}
		b = b[n:]
		switch {
		case typ == protowire.BytesType:
			v, k := protowire.ConsumeBytes(b)
			if k < 0 {
				return false
			}
			b = b[k:]
			switch num {
			case 1:
				if e.Request != nil {
					return false
				}
				e.Request = v[:len(v):len(v)]
			case 2: // packed
				for len(v) > 0 {
					x, k := protowire.ConsumeVarint(v)
					if k < 0 {
						return false
					}
					e.Ranking, v = append(e.Ranking, uint32(x)), v[k:]
				}
			case 3: // packed
				if len(v)%4 != 0 {
					return false
				}
				for ; len(v) > 0; v = v[4:] {
					x, _ := protowire.ConsumeFixed32(v)
					e.Probabilities = append(e.Probabilities, math.Float32frombits(x))
				}
			case 4, 5:
				if !utf8.Valid(v) {
					return false
				}
				if num == 4 {
					e.ModelVersion = string(v)
				} else {
					e.LearningMode = string(v)
				}
			default:
				return false
			}
		case num == 2 && typ == protowire.VarintType:
			x, k := protowire.ConsumeVarint(b)
			if k < 0 {
				return false
			}
			e.Ranking, b = append(e.Ranking, uint32(x)), b[k:]
		case num == 3 && typ == protowire.Fixed32Type:
			x, k := protowire.ConsumeFixed32(b)
			if k < 0 {
				return false
			}
			e.Probabilities, b = append(e.Probabilities, math.Float32frombits(x)), b[k:]
		default:
			return false
		}
	}
	return true
}

// rankDecoder is one pass of unmarshalRank. In the counting pass (fill
// false) the blocks are nil, the messages passed down are nil and n counts;
// in the filling pass n indexes the blocks.
type rankDecoder struct {
	fill       bool
	actions    []personalizerv1.Action
	namespaces []personalizerv1.Namespace
	nsPtrs     []*personalizerv1.Namespace // an action's namespaces are a run of these
	features   []personalizerv1.Feature
	featPtrs   []*personalizerv1.Feature // a namespace's features are a run of these
	numbers    []personalizerv1.Feature_NumberValue
	strs       []personalizerv1.Feature_StringValue
	bools      []personalizerv1.Feature_BoolValue
	n          struct{ actions, context, namespaces, features, numbers, strs, bools, excluded int }
}

// consumeTag is protowire.ConsumeTag with a fast path for one-byte tags,
// which all of a RankRequest's fields have.
func consumeTag(b []byte) (protowire.Number, protowire.Type, int) {
	if len(b) > 0 && b[0] >= 1<<3 && b[0] < 0x80 {
		return protowire.Number(b[0] >> 3), protowire.Type(b[0] & 7), 1
	}
	return protowire.ConsumeTag(b)
}

// consumeBytes is protowire.ConsumeBytes with a fast path for lengths
// below 128, which most strings and features have.
func consumeBytes(b []byte) ([]byte, int) {
	if len(b) > 0 && b[0] < 0x80 && int(b[0]) < len(b) {
		return b[1 : 1+b[0]], 1 + int(b[0])
	}
	return protowire.ConsumeBytes(b)
}

// next returns element *i of block (nil in the counting pass) and counts it.
func next[T any](block []T, i *int) *T {
	k := *i
	*i++
	if block == nil {
		return nil
	}
	return &block[k]
}

// str returns b as a string sharing its memory, or false if it is not
// UTF-8 (checked in the counting pass only).
func (d *rankDecoder) str(b []byte) (string, bool) {
	if !d.fill && !utf8.Valid(b) {
		return "", false
	}
	return unsafe.String(unsafe.SliceData(b), len(b)), true
}

func (d *rankDecoder) request(b []byte, m *personalizerv1.RankRequest) bool {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		if num == 5 && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			if m != nil {
				m.DeferActivation = v != 0
			}
			continue
		}
		if typ != protowire.BytesType {
			return false
		}
		v, n := consumeBytes(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch num {
		case 1:
			d.n.context++
			ns := next(d.namespaces, &d.n.namespaces)
			if !d.namespace(v, ns) {
				return false
			}
			if m != nil {
				m.ContextFeatures = append(m.ContextFeatures, ns)
			}
		case 2:
			a := next(d.actions, &d.n.actions)
			if !d.action(v, a) {
				return false
			}
			if m != nil {
				m.Actions = append(m.Actions, a)
			}
		case 3:
			s, ok := d.str(v)
			if !ok {
				return false
			}
			d.n.excluded++
			if m != nil {
				m.ExcludedActions = append(m.ExcludedActions, s)
			}
		case 4:
			s, ok := d.str(v)
			if !ok {
				return false
			}
			if m != nil {
				m.EventId = &s
			}
		default:
			return false
		}
	}
	return true
}

func (d *rankDecoder) action(b []byte, a *personalizerv1.Action) bool {
	start := d.n.namespaces
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 || typ != protowire.BytesType {
			return false
		}
		v, k := consumeBytes(b[n:])
		if k < 0 {
			return false
		}
		b = b[n+k:]
		switch num {
		case 1:
			s, ok := d.str(v)
			if !ok {
				return false
			}
			if a != nil {
				a.Id = s
			}
		case 2:
			ns := next(d.namespaces, &d.n.namespaces)
			if a != nil {
				d.nsPtrs[d.n.namespaces-1] = ns
			}
			if !d.namespace(v, ns) {
				return false
			}
		default:
			return false
		}
	}
	if a != nil && d.n.namespaces > start {
		a.Features = d.nsPtrs[start:d.n.namespaces:d.n.namespaces]
	}
	return true
}

func (d *rankDecoder) namespace(b []byte, ns *personalizerv1.Namespace) bool {
	start := d.n.features
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 || typ != protowire.BytesType {
			return false
		}
		v, k := consumeBytes(b[n:])
		if k < 0 {
			return false
		}
		b = b[n+k:]
		switch num {
		case 1:
			s, ok := d.str(v)
			if !ok {
				return false
			}
			if ns != nil {
				ns.Name = s
			}
		case 2:
			f := next(d.features, &d.n.features)
			if ns != nil {
				d.featPtrs[d.n.features-1] = f
			}
			if !d.feature(v, f) {
				return false
			}
		default:
			return false
		}
	}
	if ns != nil && d.n.features > start {
		ns.Features = d.featPtrs[start:d.n.features:d.n.features]
	}
	return true
}

func (d *rankDecoder) feature(b []byte, f *personalizerv1.Feature) bool {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch {
		case (num == 1 || num == 2) && typ == protowire.BytesType:
			v, n := consumeBytes(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			s, ok := d.str(v)
			if !ok {
				return false
			}
			if num == 1 {
				if f != nil {
					f.Name = s
				}
				continue
			}
			x := next(d.strs, &d.n.strs)
			if f != nil {
				x.StringValue = s
				f.Value = x
			}
		case num == 3 && typ == protowire.Fixed64Type:
			v, n := protowire.ConsumeFixed64(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			x := next(d.numbers, &d.n.numbers)
			if f != nil {
				x.NumberValue = math.Float64frombits(v)
				f.Value = x
			}
		case num == 4 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			x := next(d.bools, &d.n.bools)
			if f != nil {
				x.BoolValue = v != 0
				f.Value = x
			}
		default:
			return false
		}
	}
	return true
}

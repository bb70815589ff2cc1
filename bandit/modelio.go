package bandit

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"math"
)

// The model file: a magic string, a format version, then little-endian
//
//	policy        uint32 length + bytes
//	label range   2 float32
//	t, l1, l2     3 float64 (VW's sd->t, gravity and contraction)
//	tau, counter  2 uint64 (--first, --squarecb)
//	random state  uint64 (--bag)
//	gd state      uint32 count, then per model (float64, float64)
//	mtr state     uint32 count, then per --bag model (uint64, uint64)
//	ccb state     --ccb_explore_adf only: 1 byte, 1 once a multi-slot event was seen
//	weights       uint64 count, then per non-zero slot: uint32 slot, 4 float32
//	checksum      uint32 CRC-32 (IEEE) of everything before it
//
// Version 1 files (from before --l1, --l2, --first, --squarecb and --bag)
// are still read: after the label range they have the mtr counts (2
// uint64), two gd states, then the weights.
const (
	modelMagic   = "PZBANDIT"
	modelVersion = 2
)

// ErrChecksum reports a model file whose bytes do not match their checksum.
var ErrChecksum = errors.New("model checksum mismatch: file is corrupted")

// WriteTo writes m in a versioned binary format with a checksum. It only
// reads m, so it may run concurrently with [Model.Predict].
func (m *Model) WriteTo(w io.Writer) (int64, error) {
	cw := &checksumWriter{w: w, crc: crc32.NewIEEE()}
	b := bufio.NewWriterSize(cw, 1<<16)
	le := binary.LittleEndian
	var buf []byte
	buf = append(buf, modelMagic...)
	buf = le.AppendUint32(buf, modelVersion)
	buf = le.AppendUint32(buf, uint32(len(m.policy.args)))
	buf = append(buf, m.policy.args...)
	buf = le.AppendUint32(buf, math.Float32bits(m.minLabel))
	buf = le.AppendUint32(buf, math.Float32bits(m.maxLabel))
	for _, f := range []float64{m.t, m.gravity, m.contraction} {
		buf = le.AppendUint64(buf, math.Float64bits(f))
	}
	buf = le.AppendUint64(buf, m.tau)
	buf = le.AppendUint64(buf, m.counter)
	buf = le.AppendUint64(buf, m.rand)
	buf = le.AppendUint32(buf, uint32(len(m.gd)))
	for _, st := range m.gd {
		buf = le.AppendUint64(buf, math.Float64bits(st.normSumNormX))
		buf = le.AppendUint64(buf, math.Float64bits(st.totalWeight))
	}
	buf = le.AppendUint32(buf, uint32(len(m.mtr)))
	for _, st := range m.mtr {
		buf = le.AppendUint64(buf, st.events)
		buf = le.AppendUint64(buf, st.actions)
	}
	if m.policy.ccb {
		var seen byte
		if m.ccbMulti {
			seen = 1
		}
		buf = append(buf, seen)
	}
	var count uint64
	for slot := 0; slot < len(m.w); slot += 4 {
		if !zeroSlot(m.w[slot : slot+4]) {
			count++
		}
	}
	buf = le.AppendUint64(buf, count)
	b.Write(buf)
	var rec [20]byte
	for slot := 0; slot < len(m.w); slot += 4 {
		s := m.w[slot : slot+4]
		if zeroSlot(s) {
			continue
		}
		le.PutUint32(rec[:], uint32(slot/4))
		for j, v := range s {
			le.PutUint32(rec[4+4*j:], math.Float32bits(v))
		}
		b.Write(rec[:])
	}
	if err := b.Flush(); err != nil {
		return cw.n, err
	}
	_, err := w.Write(le.AppendUint32(nil, cw.crc.Sum32()))
	return cw.n + 4, err
}

func zeroSlot(s []float32) bool { return s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0 }

// checksumWriter writes to w and hashes what it writes.
type checksumWriter struct {
	w   io.Writer
	crc hash.Hash32
	n   int64
}

func (c *checksumWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.crc.Write(p[:n])
	c.n += int64(n)
	return n, err
}

// ReadModelPolicy returns the policy of the model file b, reading only
// its header: what the model would take ([Policy.WeightBytes]) can be
// bounded before [ReadModel] allocates it. It checks neither the rest of
// the file nor its checksum.
func ReadModelPolicy(b []byte) (*Policy, error) {
	if len(b) < len(modelMagic)+8 || string(b[:len(modelMagic)]) != modelMagic {
		return nil, errors.New("read model: not a bandit model file")
	}
	d := decoder{b: b[len(modelMagic)+4:]}
	args := string(d.bytes(int(d.u32())))
	if d.err != nil {
		return nil, fmt.Errorf("read model: %w", d.err)
	}
	pol, err := ParsePolicy(args)
	if err != nil {
		return nil, fmt.Errorf("read model: %w", err)
	}
	return pol, nil
}

// ReadModel reads a model written by [Model.WriteTo]. The model continues
// learning exactly where the written one stopped, except for what VW itself
// resets when it loads a model (the weight of held-out and unlabelled
// events, which only plain SGD's learning rate schedule uses).
func ReadModel(r io.Reader) (*Model, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read model: %w", err)
	}
	if len(b) < len(modelMagic)+4 || string(b[:len(modelMagic)]) != modelMagic {
		return nil, errors.New("read model: not a bandit model file")
	}
	version := binary.LittleEndian.Uint32(b[len(modelMagic):])
	if version != 1 && version != modelVersion {
		return nil, fmt.Errorf("read model: unsupported format version %d (want %d)", version, modelVersion)
	}
	if len(b) < len(modelMagic)+8 {
		return nil, errors.New("read model: file is truncated")
	}
	body, sum := b[:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	if crc32.ChecksumIEEE(body) != sum {
		return nil, ErrChecksum
	}
	d := decoder{b: body[len(modelMagic)+4:]}
	args := string(d.bytes(int(d.u32())))
	if d.err != nil {
		return nil, fmt.Errorf("read model: %w", d.err)
	}
	pol, err := ParsePolicy(args)
	if err != nil {
		return nil, fmt.Errorf("read model: %w", err)
	}
	m := shape(pol)
	m.minLabel = math.Float32frombits(d.u32())
	m.maxLabel = math.Float32frombits(d.u32())
	if version == 1 {
		m.mtr[0] = mtrState{events: d.u64(), actions: d.u64()}
		for i := range 2 {
			st := gdState{normSumNormX: math.Float64frombits(d.u64()), totalWeight: math.Float64frombits(d.u64())}
			if i < len(m.gd) {
				m.gd[i] = st
			}
		}
	} else {
		m.t = math.Float64frombits(d.u64())
		m.gravity = math.Float64frombits(d.u64())
		m.contraction = math.Float64frombits(d.u64())
		m.tau, m.counter, m.rand = d.u64(), d.u64(), d.u64()
		if n := d.u32(); d.err == nil && int(n) != len(m.gd) {
			d.err = fmt.Errorf("%d gd states for a policy with %d models per feature", n, len(m.gd))
		}
		for i := range m.gd {
			m.gd[i] = gdState{normSumNormX: math.Float64frombits(d.u64()), totalWeight: math.Float64frombits(d.u64())}
		}
		if n := d.u32(); d.err == nil && int(n) != len(m.mtr) {
			d.err = fmt.Errorf("%d mtr states for a policy with %d models", n, len(m.mtr))
		}
		for i := range m.mtr {
			m.mtr[i] = mtrState{events: d.u64(), actions: d.u64()}
		}
		if pol.ccb {
			if b := d.bytes(1); b != nil {
				m.ccbMulti = b[0] != 0
			}
		}
	}
	count := d.u64()
	if d.err == nil && count > uint64(len(d.b))/20 {
		d.err = fmt.Errorf("%d weights do not fit in the %d bytes left", count, len(d.b))
	}
	if d.err != nil {
		return nil, fmt.Errorf("read model: %w", d.err)
	}
	m.w = make([]float32, 4<<pol.bits)
	for range count {
		slot := uint64(d.u32())
		if slot >= uint64(len(m.w)/4) {
			d.err = fmt.Errorf("weight slot %d is out of range", slot)
			break
		}
		for j := range 4 {
			m.w[4*slot+uint64(j)] = math.Float32frombits(d.u32())
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d unexpected bytes after the weights", len(d.b))
	}
	if d.err != nil {
		return nil, fmt.Errorf("read model: %w", d.err)
	}
	return m, nil
}

// decoder reads little-endian values, remembering the first error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) bytes(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.err = errors.New("file is truncated")
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) u32() uint32 {
	if v := d.bytes(4); v != nil {
		return binary.LittleEndian.Uint32(v)
	}
	return 0
}

func (d *decoder) u64() uint64 {
	if v := d.bytes(8); v != nil {
		return binary.LittleEndian.Uint64(v)
	}
	return 0
}

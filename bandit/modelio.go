package bandit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
)

// The model file: a magic string, a format version, then little-endian
//
//	policy       uint32 length + bytes
//	label range  2 float32
//	mtr counts   2 uint64
//	gd state     2 x (float64, float64)
//	weights      uint64 count, then per non-zero slot: uint32 slot, 4 float32
//	checksum     uint32 CRC-32 (IEEE) of everything before it
const (
	modelMagic   = "PZBANDIT"
	modelVersion = 1
)

// ErrChecksum reports a model file whose bytes do not match their checksum.
var ErrChecksum = errors.New("model checksum mismatch: file is corrupted")

// WriteTo writes m in a versioned binary format with a checksum. It only
// reads m, so it may run concurrently with [Model.Predict].
func (m *Model) WriteTo(w io.Writer) (int64, error) {
	b := []byte(modelMagic)
	b = binary.LittleEndian.AppendUint32(b, modelVersion)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(m.policy.args)))
	b = append(b, m.policy.args...)
	b = binary.LittleEndian.AppendUint32(b, math.Float32bits(m.minLabel))
	b = binary.LittleEndian.AppendUint32(b, math.Float32bits(m.maxLabel))
	b = binary.LittleEndian.AppendUint64(b, m.eventSum)
	b = binary.LittleEndian.AppendUint64(b, m.actionSum)
	for _, st := range m.gd {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(st.normSumNormX))
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(st.totalWeight))
	}
	countAt := len(b)
	b = binary.LittleEndian.AppendUint64(b, 0)
	var count uint64
	for slot := 0; slot < len(m.w); slot += 4 {
		s := m.w[slot : slot+4]
		if s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0 {
			continue
		}
		count++
		b = binary.LittleEndian.AppendUint32(b, uint32(slot/4))
		for _, v := range s {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		}
	}
	binary.LittleEndian.PutUint64(b[countAt:], count)
	b = binary.LittleEndian.AppendUint32(b, crc32.ChecksumIEEE(b))
	n, err := w.Write(b)
	return int64(n), err
}

// ReadModel reads a model written by [Model.WriteTo]. The model continues
// learning exactly where the written one stopped.
func ReadModel(r io.Reader) (*Model, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read model: %w", err)
	}
	if len(b) < len(modelMagic)+4 || string(b[:len(modelMagic)]) != modelMagic {
		return nil, errors.New("read model: not a bandit model file")
	}
	if v := binary.LittleEndian.Uint32(b[len(modelMagic):]); v != modelVersion {
		return nil, fmt.Errorf("read model: unsupported format version %d (want %d)", v, modelVersion)
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
	m := NewModel(pol)
	m.minLabel = math.Float32frombits(d.u32())
	m.maxLabel = math.Float32frombits(d.u32())
	m.eventSum = d.u64()
	m.actionSum = d.u64()
	for i := range m.gd {
		m.gd[i].normSumNormX = math.Float64frombits(d.u64())
		m.gd[i].totalWeight = math.Float64frombits(d.u64())
	}
	count := d.u64()
	if d.err == nil && count > uint64(len(m.w)/4) {
		d.err = fmt.Errorf("%d weights do not fit in %d slots", count, len(m.w)/4)
	}
	for range count {
		slot := uint64(d.u32())
		if d.err != nil {
			break
		}
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

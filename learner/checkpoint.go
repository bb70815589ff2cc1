package learner

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// checkpoint is what the learner needs to resume exactly: the model, the
// next offset of every joined partition, and the remembered event keys.
type checkpoint struct {
	version  uint64
	examples uint64 // examples the model learned since it was created
	// Since format 02: the examples learned all time, when the model was
	// created (a reset, an import, a policy change) and the configured
	// policy the model follows (an imported model may have another).
	// Format 01 checkpoints read as learned = examples, a zero created
	// and an empty configured policy.
	learned    uint64
	created    time.Time
	configured string
	offsets    map[int]int64
	seen       []uint64
	model      []byte // bandit model file
}

// Checkpoint formats. 01 has version, examples, offsets, keys and the
// model; 02 adds learned, created and the configured policy after
// examples. Both are read; 02 is written.
const (
	checkpointMagic   = "PZCKPT02"
	checkpointMagicV1 = "PZCKPT01"
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

func (c *checkpoint) marshal() []byte {
	b := []byte(checkpointMagic)
	b = binary.AppendUvarint(b, c.version)
	b = binary.AppendUvarint(b, c.examples)
	b = binary.AppendUvarint(b, c.learned)
	var created int64 // zero: unknown
	if !c.created.IsZero() {
		created = c.created.UnixNano()
	}
	b = binary.AppendVarint(b, created)
	b = binary.AppendUvarint(b, uint64(len(c.configured)))
	b = append(b, c.configured...)
	parts := make([]int, 0, len(c.offsets))
	for p := range c.offsets {
		parts = append(parts, p)
	}
	slices.Sort(parts)
	b = binary.AppendUvarint(b, uint64(len(parts)))
	for _, p := range parts {
		b = binary.AppendUvarint(b, uint64(p))
		b = binary.AppendVarint(b, c.offsets[p])
	}
	b = binary.AppendUvarint(b, uint64(len(c.seen)))
	for _, k := range c.seen {
		b = binary.LittleEndian.AppendUint64(b, k)
	}
	b = binary.AppendUvarint(b, uint64(len(c.model)))
	b = append(b, c.model...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, crcTable))
}

var errCorrupt = errors.New("corrupt checkpoint")

func unmarshalCheckpoint(b []byte) (*checkpoint, error) {
	if len(b) < len(checkpointMagic)+4 {
		return nil, fmt.Errorf("%w: not a learner checkpoint", errCorrupt)
	}
	magic := string(b[:len(checkpointMagic)])
	if magic != checkpointMagic && magic != checkpointMagicV1 {
		return nil, fmt.Errorf("%w: not a learner checkpoint", errCorrupt)
	}
	body, sum := b[:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, crcTable) != sum {
		return nil, fmt.Errorf("%w: checksum mismatch", errCorrupt)
	}
	r := bytes.NewReader(body[len(checkpointMagic):])
	c := &checkpoint{offsets: map[int]int64{}}
	var err error
	uv := func() uint64 {
		v, e := binary.ReadUvarint(r)
		err = errors.Join(err, e)
		return v
	}
	c.version, c.examples = uv(), uv()
	c.learned = c.examples
	if magic == checkpointMagic {
		c.learned = uv()
		created, e := binary.ReadVarint(r)
		err = errors.Join(err, e)
		if created != 0 {
			c.created = time.Unix(0, created)
		}
		n := uv()
		if err == nil && n > uint64(r.Len()) {
			err = errors.New("configured policy is longer than the checkpoint")
		}
		if err == nil {
			p := make([]byte, n)
			_, err = io.ReadFull(r, p)
			c.configured = string(p)
		}
	}
	for n := uv(); n > 0 && err == nil; n-- {
		p := uv()
		off, e := binary.ReadVarint(r)
		err = errors.Join(err, e)
		c.offsets[int(p)] = off
	}
	n := uv()
	if err == nil && n > uint64(r.Len())/8 {
		err = errors.New("too many event keys")
	}
	for ; n > 0 && err == nil; n-- {
		var k uint64
		err = binary.Read(r, binary.LittleEndian, &k)
		c.seen = append(c.seen, k)
	}
	n = uv()
	if err == nil && n != uint64(r.Len()) {
		err = fmt.Errorf("model is %d bytes, %d left", n, r.Len())
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errCorrupt, err)
	}
	c.model = body[len(body)-r.Len():]
	return c, nil
}

// writeFileAtomic replaces path with data so that a crash, or a power
// loss, leaves either the old file or the new one. Once it returns nil
// the new file is on disk: its directory is synced after the rename, so
// a checkpoint whose version was published cannot come back as the older
// one after a power loss.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return err
	}
	return syncDir(dir)
}

// syncDir makes the entries of dir (a rename in it) durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

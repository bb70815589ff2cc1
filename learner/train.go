package learner

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/open-personalizer/personalizer/bandit"
)

// TrainConfig configures [Train], the offline equivalent of
// vw --dsjson -d Data -p Preds -f Final -i <Init> [-t] [--passes N] <Policy>.
type TrainConfig struct {
	Data   string // DSJson file, gzip-compressed or not
	Policy string // VW arguments, see bandit.ParsePolicy
	Preds  string // file for VW's -p output ("-" for stdout), "" for none
	Quiet  bool   // print no progress and no summary, as vw --quiet

	// Init, if set, is trained further instead of a new model for Policy;
	// Policy must then be empty or Init's policy.
	Init *bandit.Model

	Final      string // -f: write the model here, in the format servers load
	FinalVW    bool   // write Final as a VW 9.11.2 model file instead (vw -i reads it)
	Readable   string // --readable_model: write the weights as text here
	InvertHash string // --invert_hash: the same with feature names

	Test       bool // -t: predict only, learn nothing
	Passes     int  // --passes: passes over Data (0 means 1)
	HoldoutOff bool // --holdout_off: no holdout set with several passes
}

// Train learns from the DSJson file cfg.Data exactly as VW 9.11.2 does,
// writing VW's progress table and summary to stderr and, if asked, VW's -p
// predictions and the model. Malformed lines are skipped with a warning
// naming their line number; so are events VW drops, except the
// "_skipLearn" ones a Personalizer log is expected to have. A
// --ccb_explore_adf policy reads multi-slot lines and writes a -p line per
// slot (one pass only). It runs an
// [Engine] on [FileExamples] with VW's output as the [Report].
func Train(ctx context.Context, cfg TrainConfig, stdout, stderr io.Writer) (Summary, error) {
	m := cfg.Init
	if m == nil {
		policy, err := bandit.ParsePolicy(cfg.Policy)
		if err != nil {
			return Summary{}, err
		}
		m = bandit.NewModel(policy)
	} else if cfg.Policy != "" && cfg.Policy != m.Policy().String() {
		return Summary{}, fmt.Errorf("policy %q differs from the initial model's %q", cfg.Policy, m.Policy())
	}
	eng := &Engine{Model: m, Test: cfg.Test, Passes: cfg.Passes, HoldoutOff: cfg.HoldoutOff, KeepNames: cfg.InvertHash != ""}
	if cfg.Test {
		// VW materializes the lazy --l1/--l2 state when it loads a model
		// to test with.
		eng.Model = m.Clone()
		eng.Model.ApplyRegularization()
	}
	src, err := OpenExamples(cfg.Data)
	if err != nil {
		return Summary{}, err
	}
	defer src.Close()
	rep, err := newVWReport(cfg, eng, stdout, stderr)
	if err != nil {
		return Summary{}, err
	}
	defer rep.close() // on error paths; closed and checked by Done otherwise
	s, err := eng.Run(ctx, src, rep)
	if err != nil {
		return Summary{}, err
	}
	return s, nil
}

// quietPolicy reports a --quiet in the policy, which VW honours too.
func quietPolicy(p *bandit.Policy) bool {
	return strings.Contains(" "+p.String()+" ", " --quiet ")
}

// FileExamples reads the DSJson lines of a file, gzip-compressed or not,
// as VW's reader does: it skips blank lines, and [Where] numbers lines
// from 1.
type FileExamples struct {
	path string
	in   io.ReadCloser
	r    *bufio.Reader
	buf  []byte // for lines longer than r's buffer
	line int    // of the line Next returned last
	eof  bool
	// stream is set for a reader, which cannot be read again.
	stream bool
}

// OpenExamples opens the DSJson file at path, decompressing it if it
// starts with gzip's magic bytes.
func OpenExamples(path string) (*FileExamples, error) {
	in, err := openData(path)
	if err != nil {
		return nil, err
	}
	return &FileExamples{path: path, in: in, r: bufio.NewReaderSize(in, 1<<16)}, nil
}

// ReadExamples reads the DSJson lines of r (not compressed), as
// [OpenExamples] reads a file; name names r in errors. It cannot be
// rewound.
func ReadExamples(name string, r io.Reader) *FileExamples {
	return &FileExamples{path: name, in: io.NopCloser(r), r: bufio.NewReaderSize(r, 1<<16), stream: true}
}

// Next returns the next line that is not blank, or io.EOF.
func (f *FileExamples) Next(context.Context) (Example, error) {
	for !f.eof {
		line, err := readLine(f.r, &f.buf)
		if err != nil && err != io.EOF {
			return Example{}, fmt.Errorf("read data %s: %w", f.path, err)
		}
		f.eof = err == io.EOF
		f.line++
		if len(bytes.TrimSpace(line)) > 0 { // VW skips blank lines without a word
			return Example{Data: line, At: Where{Line: f.line}}, nil
		}
	}
	return Example{}, io.EOF
}

// Rewind opens the file again, for another pass.
func (f *FileExamples) Rewind() error {
	if f.stream {
		return fmt.Errorf("%s cannot be read again", f.path)
	}
	in, err := openData(f.path)
	if err != nil {
		return err
	}
	f.in.Close() // read only: nothing to lose
	f.in, f.line, f.eof = in, 0, false
	f.r.Reset(in)
	return nil
}

// Close closes the file.
func (f *FileExamples) Close() error { return f.in.Close() }

// gzipFile closes both the gzip reader and the file.
type gzipFile struct {
	*gzip.Reader
	f *os.File
}

func (g gzipFile) Close() error { return errors.Join(g.Reader.Close(), g.f.Close()) }

// openData opens path, decompressing it if it starts with gzip's magic
// bytes, as VW's reader does.
func openData(path string) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open data: %w", err)
	}
	var magic [2]byte
	n, _ := io.ReadFull(f, magic[:])
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("open data %s: %w", path, err)
	}
	if n < 2 || magic != [2]byte{0x1f, 0x8b} {
		if strings.HasSuffix(path, ".gz") {
			f.Close()
			return nil, fmt.Errorf("open data %s: gzip: invalid header", path)
		}
		return f, nil
	}
	z, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open data %s: %w", path, err)
	}
	return gzipFile{z, f}, nil
}

// readLine returns the next line without its '\n', growing *buf for lines
// longer than the reader's buffer.
func readLine(r *bufio.Reader, buf *[]byte) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		*buf = append((*buf)[:0], line...)
		for err == bufio.ErrBufferFull {
			line, err = r.ReadSlice('\n')
			*buf = append(*buf, line...)
		}
		line = *buf
	}
	return bytes.TrimSuffix(line, []byte("\n")), err
}

// vwReport is the [Report] of [Train]: VW's progress table, warnings and
// summary on stderr, its -p predictions and its model files.
type vwReport struct {
	cfg       TrainConfig
	stderr    io.Writer
	preds     *bufio.Writer
	predsFile *os.File
	quiet     bool
	holdout   bool
	model     *bandit.Model     // the engine's
	names     map[uint64]string // --invert_hash: feature names by slot

	// The progress table: the loss and weight counted since the last
	// row, and the weight at which the next row is due.
	sumLossSinceDump, oldLabeled float64
	hoWeightedDump, hoLossDump   float64
	dumpAt                       float64

	counts *Counts // the engine's, as of the last line
	passes int     // passes begun
}

// newVWReport creates the predictions file, if any, and prints VW's
// header unless quiet.
func newVWReport(cfg TrainConfig, eng *Engine, stdout, stderr io.Writer) (*vwReport, error) {
	m := eng.Model
	v := &vwReport{cfg: cfg, stderr: stderr, model: m, quiet: cfg.Quiet || quietPolicy(m.Policy()), holdout: eng.holdout(), dumpAt: 1}
	switch cfg.Preds {
	case "":
	case "-":
		v.preds = bufio.NewWriter(stdout)
	default:
		f, err := os.Create(cfg.Preds)
		if err != nil {
			return nil, fmt.Errorf("create predictions: %w", err)
		}
		v.predsFile, v.preds = f, bufio.NewWriter(f)
	}
	if cfg.InvertHash != "" {
		v.names = map[uint64]string{}
	}
	if !v.quiet {
		fmt.Fprintf(stderr, "policy = %s\n", m.Policy())
		if cfg.Test {
			fmt.Fprintln(stderr, "only testing")
		}
		if cfg.Final != "" {
			fmt.Fprintf(stderr, "final_regressor = %s\n", cfg.Final)
		}
		if cfg.Preds != "" {
			fmt.Fprintf(stderr, "predictions = %s\n", cfg.Preds)
		}
		fmt.Fprintf(stderr, "Reading datafile = %s\n", cfg.Data)
		fmt.Fprint(stderr, "average  since         example        example        current        current  current\n"+
			"loss     last          counter         weight          label        predict features\n")
	}
	return v, nil
}

// close closes the predictions file, if still open.
func (v *vwReport) close() {
	if v.predsFile != nil {
		v.predsFile.Close()
	}
}

// Example warns of a skipped line, or records the example's feature
// names, writes its -p line and prints a progress row when the weighted
// example count has doubled.
func (v *vwReport) Example(s *Step) error {
	if s.Err != nil {
		if !errors.Is(s.Err, bandit.ErrSkipLearn) {
			fmt.Fprintf(v.stderr, "warning: line %d skipped: %v\n", s.At.Line, s.Err)
		}
		return nil
	}
	v.counts, v.passes = s.Counts, s.Pass+1
	ev := s.Event
	if v.names != nil && s.Pass == 0 {
		v.model.Names(ev, s.Pred, func(slot uint64, name string) {
			if _, ok := v.names[slot]; !ok {
				v.names[slot] = name
			}
		})
	}
	if v.preds != nil {
		var err error
		if slots := s.Pred.Slots(); slots != nil {
			err = writeSlots(v.preds, slots)
		} else {
			err = writePMF(v.preds, s.Pred.PMF(), ev.Tag())
		}
		if err != nil {
			return fmt.Errorf("write predictions: %w", err)
		}
	}
	if n := ev.NumSlots(); n > 0 && s.Labeled && !v.quiet {
		for k := range n {
			if _, _, _, ok := ev.SlotOutcome(k); !ok {
				fmt.Fprintf(v.stderr, "warning: line %d: Unlabeled example in train set, was this intentional?\n", s.At.Line)
				break
			}
		}
	}
	if s.Labeled && s.HeldOut {
		v.hoWeightedDump += float64(ev.Weight())
		v.hoLossDump += s.Loss
	} else {
		v.sumLossSinceDump += s.Loss
	}
	if v.quiet || s.Counts.WeightedExamples < v.dumpAt {
		return nil
	}
	v.printProgress(s)
	return nil
}

// BestPass saves the model of the best pass so far.
func (v *vwReport) BestPass(m *bandit.Model) error { return v.save(m) }

// Done flushes the predictions, saves the model unless early termination
// saved the best pass's, and prints VW's summary unless quiet.
func (v *vwReport) Done(s *Summary) error {
	if v.preds != nil {
		err := v.preds.Flush()
		if v.predsFile != nil {
			err = errors.Join(err, v.predsFile.Close())
			v.predsFile = nil
		}
		if err != nil {
			return fmt.Errorf("write predictions: %w", err)
		}
	}
	if !s.Stopped {
		if err := v.save(s.Model); err != nil {
			return err
		}
	}
	if !v.quiet {
		v.printSummary(s)
	}
	return nil
}

// save writes the model files asked for.
func (v *vwReport) save(m *bandit.Model) error {
	write := func(path string, w func(io.Writer) error) error {
		if path == "" {
			return nil
		}
		f, err := os.Create(path)
		if err != nil {
			return fmt.Errorf("write model: %w", err)
		}
		if err := errors.Join(w(f), f.Close()); err != nil {
			return fmt.Errorf("write model %s: %w", path, err)
		}
		return nil
	}
	if err := write(v.cfg.Final, func(w io.Writer) error {
		if v.cfg.FinalVW {
			return m.WriteVW(w, v.vwStats())
		}
		_, err := m.WriteTo(w)
		return err
	}); err != nil {
		return err
	}
	if err := write(v.cfg.Readable, func(w io.Writer) error { return m.WriteReadable(w, nil) }); err != nil {
		return err
	}
	return write(v.cfg.InvertHash, func(w io.Writer) error { return m.WriteReadable(w, v.names) })
}

// vwStats are VW's progress counters of the run so far, which a VW
// model file carries.
func (v *vwReport) vwStats() *bandit.VWStats {
	st := &bandit.VWStats{DumpInterval: float32(v.dumpAt), Passes: uint64(v.passes)}
	if c := v.counts; c != nil {
		st.SumLoss, st.SumLossSinceDump = c.SumLoss, v.sumLossSinceDump
		st.WeightedLabeled, st.WeightedUnlabeled = c.WeightedLabeled, c.WeightedExamples-c.WeightedLabeled
		st.OldWeightedLabeled = v.oldLabeled
		st.Examples, st.TotalFeatures = uint64(c.Examples), uint64(c.TotalFeatures)
	}
	return st
}

// writePMF writes one -p line as VW does: 0-based action:probability pairs,
// probabilities with at most 6 decimals, the tag, then an empty line.
func writePMF(w *bufio.Writer, pmf []bandit.ActionProb, tag string) error {
	writeActionProbs(w, pmf)
	if tag != "" {
		w.WriteByte(' ')
		w.WriteString(tag)
	}
	_, err := w.WriteString("\n\n")
	return err
}

// writeSlots writes the -p lines of a multi-slot event as VW does: one
// action:probability list per slot (empty for a slot without candidates),
// then an empty line.
func writeSlots(w *bufio.Writer, slots [][]bandit.ActionProb) error {
	for _, pmf := range slots {
		writeActionProbs(w, pmf)
		w.WriteByte('\n')
	}
	return w.WriteByte('\n')
}

// writeActionProbs writes pmf as VW's -p does: comma-separated 0-based
// action:probability pairs, probabilities with at most 6 decimals.
func writeActionProbs(w *bufio.Writer, pmf []bandit.ActionProb) {
	var num [32]byte
	for i, ap := range pmf {
		if i > 0 {
			w.WriteByte(',')
		}
		w.Write(strconv.AppendInt(num[:0], int64(ap.Action), 10))
		w.WriteByte(':')
		w.Write(appendFloat(num[:0], ap.Prob, 6))
	}
}

// appendFloat is VW's fmt_float: fixed decimals with trailing zeros removed.
func appendFloat(dst []byte, f float32, decimals int) []byte {
	start := len(dst)
	dst = strconv.AppendFloat(dst, float64(f), 'f', decimals, 32)
	if bytes.IndexByte(dst[start:], '.') >= 0 {
		for dst[len(dst)-1] == '0' {
			dst = dst[:len(dst)-1]
		}
		dst = bytes.TrimSuffix(dst, []byte("."))
	}
	return dst
}

func fmtFloat(f float32, decimals int) string { return string(appendFloat(nil, f, decimals)) }

// printProgress prints a row of VW's progress table.
func (v *vwReport) printProgress(s *Step) {
	c := s.Counts
	avg, since, suffix := "n.a.", "n.a.", ""
	if v.holdout && s.Pass >= 1 {
		avg, since, suffix = "unknown", "unknown", " h"
		if c.HoldoutSumLoss != 0 || c.HoldoutWeighted != 0 {
			avg = strconv.FormatFloat(c.HoldoutSumLoss/c.HoldoutWeighted, 'f', 6, 64)
		}
		if v.hoLossDump != 0 || v.hoWeightedDump != 0 {
			since = strconv.FormatFloat(v.hoLossDump/v.hoWeightedDump, 'f', 6, 64)
		}
		v.hoLossDump, v.hoWeightedDump = 0, 0
	} else {
		if c.WeightedLabeled > 0 {
			avg = strconv.FormatFloat(c.SumLoss/c.WeightedLabeled, 'f', 6, 64)
		}
		if c.WeightedLabeled != v.oldLabeled {
			since = strconv.FormatFloat(v.sumLossSinceDump/(c.WeightedLabeled-v.oldLabeled), 'f', 6, 64)
		}
	}
	label := "unknown"
	if chosen, cost, prob, ok := s.Event.Label(); ok && s.Labeled {
		label = strconv.Itoa(chosen) + ":" + fmtG2(cost) + ":" + fmtG2(prob)
	}
	predict := "no action"
	if pmf := s.Pred.PMF(); len(pmf) > 0 {
		predict = strconv.Itoa(pmf[0].Action) + ":" + fmtFloat(pmf[0].Prob, 2)
	}
	if slots := s.Pred.Slots(); slots != nil {
		label, predict = slotColumns(s.Event, slots)
	}
	fmt.Fprintf(v.stderr, "%-8s %-8s %12s %14s %14s %14s %8s%s\n",
		trunc(avg, 8, false), trunc(since, 8, false), strconv.FormatInt(c.Examples, 10),
		strconv.FormatFloat(c.WeightedExamples, 'f', 1, 64), trunc(label, 14, true), trunc(predict, 14, true),
		trunc(strconv.Itoa(s.Pred.NumFeatures()), 8, false), suffix)
	v.sumLossSinceDump = 0
	v.oldLabeled = c.WeightedLabeled
	v.dumpAt = float64(float32(c.WeightedExamples) * 2)
}

// slotColumns are the label and prediction columns of VW's progress table
// for a multi-slot event: the first two slots' "action:cost" ("?" without
// an outcome) and "...", and every slot's chosen action ("None" without
// candidates).
func slotColumns(ev *bandit.Event, slots [][]bandit.ActionProb) (label, predict string) {
	var l, p []string
	n := ev.NumSlots()
	for k := range n {
		if a, cost, _, ok := ev.SlotOutcome(k); ok {
			l = append(l, strconv.Itoa(a)+":"+strconv.FormatFloat(float64(cost), 'g', 6, 32))
		} else {
			l = append(l, "?")
		}
		if k > 0 && n > 2 {
			l = append(l, "...")
			break
		}
	}
	for _, d := range slots {
		if len(d) == 0 {
			p = append(p, "None")
		} else {
			p = append(p, strconv.Itoa(d[0].Action))
		}
	}
	return strings.Join(l, ","), strings.Join(p, ",")
}

// fmtG2 formats like a C++ stream with precision 2, as VW prints labels.
func fmtG2(f float32) string { return strconv.FormatFloat(float64(f), 'g', 2, 32) }

// trunc cuts s to a column width as VW's table formatter does.
func trunc(s string, width int, ellipsis bool) string {
	if len(s) <= width {
		return s
	}
	if ellipsis {
		return s[:width-3] + "..."
	}
	return s[:width]
}

// printSummary prints VW's final summary.
func (v *vwReport) printSummary(s *Summary) {
	var b strings.Builder
	b.WriteString("\nfinished run\n")
	if s.Passes <= 1 {
		fmt.Fprintf(&b, "number of examples = %d\n", s.Examples)
	} else {
		fmt.Fprintf(&b, "number of examples per pass = %d\npasses used = %d\n", s.Examples/int64(s.Passes), s.Passes)
	}
	fmt.Fprintf(&b, "weighted example sum = %.6f\nweighted label sum = 0.000000\naverage loss = ", s.WeightedExamples)
	switch {
	case !v.holdout && s.WeightedLabeled > 0:
		b.WriteString(strconv.FormatFloat(s.AverageLoss, 'f', 6, 64))
	case !v.holdout:
		b.WriteString("n.a.")
	case !math.IsNaN(s.HoldoutLoss):
		b.WriteString(strconv.FormatFloat(s.HoldoutLoss, 'f', 6, 32) + " h")
	default:
		b.WriteString("undefined (no holdout)")
	}
	fmt.Fprintf(&b, "\ntotal feature number = %d\nevents dropped = %d\nmalformed lines skipped = %d\n",
		s.TotalFeatures, s.Dropped, s.Malformed)
	io.WriteString(v.stderr, b.String())
}

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

	"golang.org/x/sync/errgroup"

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
	Readable   string // --readable_model: write the weights as text here
	InvertHash string // --invert_hash: the same with feature names

	Test       bool // -t: predict only, learn nothing
	Passes     int  // --passes: passes over Data (0 means 1)
	HoldoutOff bool // --holdout_off: no holdout set with several passes
}

// Summary is what [Train] reports at the end, as VW's final summary.
type Summary struct {
	Examples         int64   // events predicted and counted (VW's "number of examples"; held-out events excluded)
	WeightedExamples float64 // their total weight
	WeightedLabeled  float64 // the weight of the labelled ones
	AverageLoss      float64 // VW's progressive "average loss"; NaN if nothing was labelled
	HoldoutLoss      float64 // the best pass's holdout loss with several passes; NaN without a holdout set
	Passes           int     // passes made (fewer than asked if the holdout loss stopped improving)
	TotalFeatures    int64   // VW's "total feature number"
	Dropped          int     // events VW drops (no actions, _skipLearn)
	Malformed        int     // lines skipped because they are not valid DSJson
	Model            *bandit.Model
}

// VW's multi-pass defaults (parse_args.cc): every tenth event is held out,
// and training stops after three passes without a better holdout loss.
const (
	holdoutPeriod  = 10
	earlyTerminate = 3
)

// Train learns from the DSJson file cfg.Data exactly as VW 9.11.2 does,
// writing VW's progress table and summary to stderr and, if asked, VW's -p
// predictions and the model. Malformed lines are skipped with a warning
// naming their line number; so are events VW drops, except the
// "_skipLearn" ones a Personalizer log is expected to have. One goroutine
// reads and parses while the caller's learns, which gives the same results
// as doing both in turn.
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
	passes := max(cfg.Passes, 1)
	if cfg.Passes < 0 {
		return Summary{}, fmt.Errorf("--passes %d must be at least 1", cfg.Passes)
	}
	if cfg.Test {
		// VW materializes the lazy --l1/--l2 state when it loads a model
		// to test with.
		m = m.Clone()
		m.ApplyRegularization()
	}
	if err := checkReadable(cfg.Data); err != nil {
		return Summary{}, err
	}

	var (
		preds     *bufio.Writer
		predsFile *os.File
		err       error
	)
	switch cfg.Preds {
	case "":
	case "-":
		preds = bufio.NewWriter(stdout)
	default:
		if predsFile, err = os.Create(cfg.Preds); err != nil {
			return Summary{}, fmt.Errorf("create predictions: %w", err)
		}
		defer predsFile.Close() // on error paths; closed and checked below otherwise
		preds = bufio.NewWriter(predsFile)
	}

	t := &trainer{
		cfg: cfg, model: m, stderr: stderr, preds: preds, quiet: cfg.Quiet || quietPolicy(m.Policy()),
		holdout: passes > 1 && !cfg.HoldoutOff, dumpAt: 1, bestLoss: math.MaxFloat32,
	}
	if cfg.InvertHash != "" {
		t.names = map[uint64]string{}
	}
	if !t.quiet {
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

	full, free := make(chan *batch, batches), make(chan *batch, batches)
	for range batches {
		free <- &batch{items: make([]item, batchSize)}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return read(gctx, cfg.Data, m.Policy(), passes, t.names != nil, full, free) })
	g.Go(func() error {
		err := t.run(gctx, full, free)
		if err == nil {
			err = errDone // stops the reader if learning ended early
		}
		return err
	})
	if err := g.Wait(); err != nil && !errors.Is(err, errDone) {
		if cerr := ctx.Err(); cerr != nil {
			return Summary{}, cerr
		}
		return Summary{}, err
	}
	if preds != nil {
		err := preds.Flush()
		if predsFile != nil {
			err = errors.Join(err, predsFile.Close())
		}
		if err != nil {
			return Summary{}, fmt.Errorf("write predictions: %w", err)
		}
	}
	if !t.stopped {
		if err := t.save(); err != nil {
			return Summary{}, err
		}
	}
	return t.summary(), nil
}

// quietPolicy reports a --quiet in the policy, which VW honours too.
func quietPolicy(p *bandit.Policy) bool {
	return strings.Contains(" "+p.String()+" ", " --quiet ")
}

var errDone = errors.New("training done")

// Work travels from the reader to the learner in batches of events, and the
// batches come back to be refilled: in steady state nothing is allocated.
// Few small batches keep the events' memory hot in the caches the two
// goroutines share: with 512 events in flight parsing took 40% more time.
// (A second parsing goroutine helps only when learning is the lighter
// part, as with -t: otherwise it takes CPU time from the learner.)
const (
	batches   = 3
	batchSize = 16
)

type batch struct {
	items   []item
	n       int
	endPass bool // the last batch of a pass
}

// item is one non-blank line: a parsed event or why it was skipped.
type item struct {
	ev   bandit.Event
	line int
	err  error // wraps bandit.ErrSkip for events VW drops
}

func checkReadable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open data: %w", err) // the error names the file
	}
	return f.Close()
}

// read parses the data file passes times into batches of events prepared
// for policy. It owns the parser.
func read(ctx context.Context, path string, policy *bandit.Policy, passes int, names bool, full chan<- *batch, free <-chan *batch) error {
	var parser bandit.DSJSONParser
	for pass := range passes {
		// VW records feature names in the first pass only.
		parser.KeepNames = names && pass == 0
		if err := readPass(ctx, path, policy, &parser, full, free); err != nil {
			return err
		}
	}
	close(full)
	return nil
}

func readPass(ctx context.Context, path string, policy *bandit.Policy, parser *bandit.DSJSONParser, full chan<- *batch, free <-chan *batch) error {
	in, err := openData(path)
	if err != nil {
		return err
	}
	defer in.Close()
	r := bufio.NewReaderSize(in, 1<<16)
	var (
		buf []byte
		b   *batch
	)
	for lineNo := 1; ; lineNo++ {
		if b == nil {
			select {
			case b = <-free:
				b.n, b.endPass = 0, false
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		line, err := readLine(r, &buf)
		if err != nil && err != io.EOF {
			return fmt.Errorf("read data %s: %w", path, err)
		}
		if len(bytes.TrimSpace(line)) > 0 { // VW skips blank lines without a word
			it := &b.items[b.n]
			it.line = lineNo
			if it.err = parser.Parse(line, &it.ev); it.err == nil {
				it.ev.Prepare(policy)
			}
			b.n++
		}
		if err == io.EOF || b.n == len(b.items) {
			b.endPass = err == io.EOF
			select {
			case full <- b:
				b = nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err == io.EOF {
			return nil
		}
	}
}

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

// trainer learns the events in order and keeps VW's shared_data: the
// counters behind the progress table and the summary.
type trainer struct {
	cfg     TrainConfig
	model   *bandit.Model
	pred    bandit.Prediction
	stderr  io.Writer
	preds   *bufio.Writer
	quiet   bool
	names   map[uint64]string
	holdout bool

	pass, inPass                  int // current pass and events seen in it
	examples                      int64
	weighted, labeled, oldLabeled float64
	sumLoss, sumLossSinceDump     float64
	features                      int64
	dumpAt                        float64
	dropped, malformed            int

	// The holdout set (several passes): every holdoutPeriod-th event.
	hoWeighted, hoLoss         float64
	hoWeightedDump, hoLossDump float64
	hoWeightedPass, hoLossPass float64
	bestLoss                   float32
	noWin                      int
	stopped                    bool // early termination: the model was saved at the best pass
}

func (t *trainer) run(ctx context.Context, full <-chan *batch, free chan<- *batch) error {
	for {
		var b *batch
		var ok bool
		select {
		case b, ok = <-full:
		case <-ctx.Done():
			return ctx.Err()
		}
		if !ok {
			return nil
		}
		if err := ctx.Err(); err != nil { // select picks at random when both are ready
			return err
		}
		for i := range b.items[:b.n] {
			if err := t.event(&b.items[i]); err != nil {
				return err
			}
		}
		end := b.endPass
		free <- b
		if end {
			if stop, err := t.endPass(); err != nil || stop {
				return err
			}
		}
	}
}

// event learns (or tests) one parsed line.
func (t *trainer) event(it *item) error {
	if it.err != nil {
		if errors.Is(it.err, bandit.ErrSkip) {
			t.dropped++
			if errors.Is(it.err, bandit.ErrSkipLearn) {
				return nil
			}
		} else {
			t.malformed++
		}
		fmt.Fprintf(t.stderr, "warning: line %d skipped: %v\n", it.line, it.err)
		return nil
	}
	ev := &it.ev
	// VW holds out the tenth event of every ten in each pass (its
	// in_pass_counter counts events).
	heldOut := t.holdout && t.inPass%holdoutPeriod == holdoutPeriod-1
	t.inPass++
	mode := bandit.ModeLearn
	switch {
	case t.cfg.Test:
		mode = bandit.ModeTest
	case heldOut:
		mode = bandit.ModeHoldout
	}
	loss, labeled := t.model.Process(ev, &t.pred, mode)
	if t.names != nil && t.pass == 0 {
		t.model.Names(ev, &t.pred, func(slot uint64, name string) {
			if _, ok := t.names[slot]; !ok {
				t.names[slot] = name
			}
		})
	}
	if t.preds != nil {
		if err := writePMF(t.preds, t.pred.PMF(), ev.Tag()); err != nil {
			return fmt.Errorf("write predictions: %w", err)
		}
	}
	t.update(ev, loss, labeled, heldOut)
	return nil
}

// endPass is VW's end of a pass: with a holdout set, keep the model of the
// best pass and stop after three passes without improvement.
func (t *trainer) endPass() (stop bool, err error) {
	t.pass++
	t.inPass = 0
	if !t.holdout {
		return false, nil
	}
	loss := float32(math.MaxFloat32 * 0.5)
	if t.hoWeightedPass > 0 {
		loss = float32(t.hoLossPass / t.hoWeightedPass)
	}
	t.hoWeightedPass, t.hoLossPass = 0, 0
	if loss < t.bestLoss {
		t.bestLoss, t.noWin = loss, 0
		return false, t.save()
	}
	t.noWin++
	if t.noWin == earlyTerminate {
		// VW stops and keeps the model it saved at the best pass.
		t.stopped = true
		return true, nil
	}
	return false, nil
}

// save writes the model files asked for.
func (t *trainer) save() error {
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
	if err := write(t.cfg.Final, func(w io.Writer) error { _, err := t.model.WriteTo(w); return err }); err != nil {
		return err
	}
	if err := write(t.cfg.Readable, func(w io.Writer) error { return t.model.WriteReadable(w, nil) }); err != nil {
		return err
	}
	return write(t.cfg.InvertHash, func(w io.Writer) error { return t.model.WriteReadable(w, t.names) })
}

// writePMF writes one -p line as VW does: 0-based action:probability pairs,
// probabilities with at most 6 decimals, the tag, then an empty line.
func writePMF(w *bufio.Writer, pmf []bandit.ActionProb, tag string) error {
	var num [32]byte
	for i, ap := range pmf {
		if i > 0 {
			w.WriteByte(',')
		}
		w.Write(strconv.AppendInt(num[:0], int64(ap.Action), 10))
		w.WriteByte(':')
		w.Write(appendFloat(num[:0], ap.Prob, 6))
	}
	if tag != "" {
		w.WriteByte(' ')
		w.WriteString(tag)
	}
	_, err := w.WriteString("\n\n")
	return err
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

// update counts one predicted event, as VW's shared_data::update, and
// prints a progress line whenever the weighted example count doubles.
func (t *trainer) update(ev *bandit.Event, loss float64, labeled, heldOut bool) {
	w := float64(ev.Weight())
	if labeled && heldOut {
		t.hoWeighted += w
		t.hoWeightedDump += w
		t.hoWeightedPass += w
		t.hoLoss += loss
		t.hoLossDump += loss
		t.hoLossPass += loss
	} else {
		if labeled {
			t.labeled += w
		}
		t.weighted += w
		t.sumLoss += loss
		t.sumLossSinceDump += loss
		t.features += int64(t.pred.NumFeatures())
		t.examples++
	}
	if t.quiet || t.weighted < t.dumpAt {
		return
	}
	t.printProgress(ev, labeled)
}

func (t *trainer) printProgress(ev *bandit.Event, labeled bool) {
	avg, since, suffix := "n.a.", "n.a.", ""
	if t.holdout && t.pass >= 1 {
		avg, since, suffix = "unknown", "unknown", " h"
		if t.hoLoss != 0 || t.hoWeighted != 0 {
			avg = strconv.FormatFloat(t.hoLoss/t.hoWeighted, 'f', 6, 64)
		}
		if t.hoLossDump != 0 || t.hoWeightedDump != 0 {
			since = strconv.FormatFloat(t.hoLossDump/t.hoWeightedDump, 'f', 6, 64)
		}
		t.hoLossDump, t.hoWeightedDump = 0, 0
	} else {
		if t.labeled > 0 {
			avg = strconv.FormatFloat(t.sumLoss/t.labeled, 'f', 6, 64)
		}
		if t.labeled != t.oldLabeled {
			since = strconv.FormatFloat(t.sumLossSinceDump/(t.labeled-t.oldLabeled), 'f', 6, 64)
		}
	}
	label := "unknown"
	if chosen, cost, prob, ok := ev.Label(); ok && labeled {
		label = strconv.Itoa(chosen) + ":" + fmtG2(cost) + ":" + fmtG2(prob)
	}
	predict := "no action"
	if pmf := t.pred.PMF(); len(pmf) > 0 {
		predict = strconv.Itoa(pmf[0].Action) + ":" + fmtFloat(pmf[0].Prob, 2)
	}
	fmt.Fprintf(t.stderr, "%-8s %-8s %12s %14s %14s %14s %8s%s\n",
		trunc(avg, 8, false), trunc(since, 8, false), strconv.FormatInt(t.examples, 10),
		strconv.FormatFloat(t.weighted, 'f', 1, 64), trunc(label, 14, true), trunc(predict, 14, true),
		trunc(strconv.Itoa(t.pred.NumFeatures()), 8, false), suffix)
	t.sumLossSinceDump = 0
	t.oldLabeled = t.labeled
	t.dumpAt = float64(float32(t.weighted) * 2)
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

func (t *trainer) summary() Summary {
	s := Summary{
		Examples:         t.examples,
		WeightedExamples: t.weighted,
		WeightedLabeled:  t.labeled,
		AverageLoss:      t.sumLoss / t.labeled,
		HoldoutLoss:      math.NaN(),
		Passes:           max(t.pass, 1),
		TotalFeatures:    t.features,
		Dropped:          t.dropped,
		Malformed:        t.malformed,
		Model:            t.model,
	}
	haveHoldout := t.holdout && t.bestLoss != math.MaxFloat32 && t.bestLoss != math.MaxFloat32*0.5
	if haveHoldout {
		s.HoldoutLoss = float64(t.bestLoss)
	}
	if t.quiet {
		return s
	}
	var b strings.Builder
	b.WriteString("\nfinished run\n")
	if s.Passes <= 1 {
		fmt.Fprintf(&b, "number of examples = %d\n", t.examples)
	} else {
		fmt.Fprintf(&b, "number of examples per pass = %d\npasses used = %d\n", t.examples/int64(s.Passes), s.Passes)
	}
	fmt.Fprintf(&b, "weighted example sum = %.6f\nweighted label sum = 0.000000\naverage loss = ", t.weighted)
	switch {
	case !t.holdout && t.labeled > 0:
		b.WriteString(strconv.FormatFloat(s.AverageLoss, 'f', 6, 64))
	case !t.holdout:
		b.WriteString("n.a.")
	case haveHoldout:
		b.WriteString(strconv.FormatFloat(s.HoldoutLoss, 'f', 6, 32) + " h")
	default:
		b.WriteString("undefined (no holdout)")
	}
	fmt.Fprintf(&b, "\ntotal feature number = %d\nevents dropped = %d\nmalformed lines skipped = %d\n",
		t.features, t.dropped, t.malformed)
	io.WriteString(t.stderr, b.String())
	return s
}

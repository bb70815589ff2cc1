package learner

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/open-personalizer/personalizer/bandit"
)

// TrainConfig configures [Train], the offline equivalent of
// vw --dsjson -d Data -p Preds <Policy>.
type TrainConfig struct {
	Data   string // DSJson file; gzip-compressed if it ends in .gz
	Policy string // VW arguments, see bandit.ParsePolicy
	Preds  string // file for VW's -p output ("-" for stdout), "" for none
	Quiet  bool   // print no progress and no summary, as vw --quiet

	// Init, if set, is trained further instead of a new model for Policy;
	// Policy must then be empty or Init's policy.
	Init *bandit.Model
}

// Summary is what [Train] reports at the end, as VW's final summary.
type Summary struct {
	Examples         int64   // events predicted (VW's "number of examples")
	WeightedExamples float64 // their total weight
	WeightedLabeled  float64 // the weight of the labelled ones
	AverageLoss      float64 // VW's progressive "average loss"; NaN if nothing was labelled
	TotalFeatures    int64   // VW's "total feature number"
	Dropped          int     // events VW drops silently (no actions, _skipLearn)
	Malformed        int     // lines skipped because they are not valid DSJson
	Model            *bandit.Model
}

// Train learns from the DSJson file cfg.Data in one pass, exactly as VW
// 9.11.2 does, writing VW's progress table and summary to stderr and, if
// asked, VW's -p predictions. Malformed lines are skipped with a warning
// naming their line number. It returns the trained model in the summary.
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

	in, err := openData(cfg.Data)
	if err != nil {
		return Summary{}, err
	}
	defer in.Close()

	var (
		preds     *bufio.Writer
		predsFile *os.File
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

	t := trainer{model: m, stderr: stderr, quiet: cfg.Quiet, dumpAt: 1}
	if !cfg.Quiet {
		fmt.Fprintf(stderr, "policy = %s\n", m.Policy())
		if cfg.Preds != "" {
			fmt.Fprintf(stderr, "predictions = %s\n", cfg.Preds)
		}
		fmt.Fprintf(stderr, "Reading datafile = %s\n", cfg.Data)
		fmt.Fprint(stderr, "average  since         example        example        current        current  current\n"+
			"loss     last          counter         weight          label        predict features\n")
	}
	if err := t.run(ctx, in, preds); err != nil {
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
	return t.summary(), nil
}

// gzipFile closes both the gzip reader and the file.
type gzipFile struct {
	*gzip.Reader
	f *os.File
}

func (g gzipFile) Close() error { return errors.Join(g.Reader.Close(), g.f.Close()) }

func openData(path string) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open data: %w", err) // the error names the file
	}
	if !strings.HasSuffix(path, ".gz") {
		return f, nil
	}
	z, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open data %s: %w", path, err)
	}
	return gzipFile{z, f}, nil
}

// trainer holds VW's shared_data: the counters behind the progress table.
type trainer struct {
	model  *bandit.Model
	stderr io.Writer
	quiet  bool

	examples                      int64
	weighted, labeled, oldLabeled float64
	sumLoss, sumLossSinceDump     float64
	features                      int64
	dumpAt                        float64
	dropped, malformed            int
}

func (t *trainer) run(ctx context.Context, in io.Reader, preds *bufio.Writer) error {
	r := bufio.NewReaderSize(in, 1<<16)
	var (
		parser bandit.DSJSONParser
		ev     bandit.Event
		pred   bandit.Prediction
		buf    []byte
	)
	for lineNo := 1; ; lineNo++ {
		if lineNo%1024 == 1 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		line, err := readLine(r, &buf)
		if err == io.EOF && len(line) == 0 {
			return nil
		}
		if err != nil && err != io.EOF {
			return fmt.Errorf("read data: %w", err)
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue // VW skips blank lines without a word
		}
		if perr := parser.Parse(line, &ev); perr != nil {
			if errors.Is(perr, bandit.ErrSkip) {
				t.dropped++
				continue
			}
			t.malformed++
			fmt.Fprintf(t.stderr, "warning: line %d skipped: %v\n", lineNo, perr)
			continue
		}
		loss, _ := t.model.Learn(&ev, &pred)
		if preds != nil {
			if err := writePMF(preds, pred.PMF(), ev.Tag()); err != nil {
				return fmt.Errorf("write predictions: %w", err)
			}
		}
		t.update(&ev, &pred, loss)
		if err == io.EOF {
			return nil
		}
	}
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

// writePMF writes one -p line as VW does: 0-based action:probability pairs,
// probabilities with at most 6 decimals, the tag, then an empty line.
func writePMF(w *bufio.Writer, pmf []bandit.ActionProb, tag string) error {
	for i, ap := range pmf {
		if i > 0 {
			w.WriteByte(',')
		}
		w.WriteString(strconv.Itoa(ap.Action))
		w.WriteByte(':')
		w.WriteString(fmtFloat(ap.Prob, 6))
	}
	if tag != "" {
		w.WriteByte(' ')
		w.WriteString(tag)
	}
	_, err := w.WriteString("\n\n")
	return err
}

// fmtFloat is VW's fmt_float: fixed decimals with trailing zeros removed.
func fmtFloat(f float32, decimals int) string {
	s := strconv.FormatFloat(float64(f), 'f', decimals, 32)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// update counts one predicted event and prints a progress line whenever
// the weighted example count doubles, as VW's shared_data does.
func (t *trainer) update(ev *bandit.Event, pred *bandit.Prediction, loss float64) {
	w := float64(ev.Weight())
	chosen, cost, prob, labeled := ev.Label()
	labeled = labeled && ev.Validate() == nil
	t.examples++
	t.weighted += w
	if labeled {
		t.labeled += w
	}
	t.sumLoss += loss
	t.sumLossSinceDump += loss
	t.features += int64(pred.NumFeatures())
	if t.quiet || t.weighted < t.dumpAt {
		return
	}
	avg, since := "n.a.", "n.a."
	if t.labeled > 0 {
		avg = strconv.FormatFloat(t.sumLoss/t.labeled, 'f', 6, 64)
	}
	if t.labeled != t.oldLabeled {
		since = strconv.FormatFloat(t.sumLossSinceDump/(t.labeled-t.oldLabeled), 'f', 6, 64)
	}
	label := "unknown"
	if labeled {
		label = strconv.Itoa(chosen) + ":" + fmtG2(cost) + ":" + fmtG2(prob)
	}
	predict := "no action"
	if pmf := pred.PMF(); len(pmf) > 0 {
		predict = strconv.Itoa(pmf[0].Action) + ":" + fmtFloat(pmf[0].Prob, 2)
	}
	fmt.Fprintf(t.stderr, "%-8s %-8s %12s %14s %14s %14s %8s\n",
		trunc(avg, 8, false), trunc(since, 8, false), strconv.FormatInt(t.examples, 10),
		strconv.FormatFloat(t.weighted, 'f', 1, 64), trunc(label, 14, true), trunc(predict, 14, true),
		trunc(strconv.Itoa(pred.NumFeatures()), 8, false))
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
		TotalFeatures:    t.features,
		Dropped:          t.dropped,
		Malformed:        t.malformed,
		Model:            t.model,
	}
	if t.quiet {
		return s
	}
	avg := "n.a."
	if t.labeled > 0 {
		avg = strconv.FormatFloat(s.AverageLoss, 'f', 6, 64)
	}
	fmt.Fprintf(t.stderr, "\nfinished run\nnumber of examples = %d\nweighted example sum = %.6f\n"+
		"weighted label sum = 0.000000\naverage loss = %s\ntotal feature number = %d\n"+
		"events dropped = %d\nmalformed lines skipped = %d\n",
		t.examples, t.weighted, avg, t.features, t.dropped, t.malformed)
	return s
}

package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/learner"
)

// runTrain is `personalizer train`, VW's offline training with VW's flags:
// personalizer train --dsjson FILE --policy "ARGS" [-p PREDS] [-f MODEL]
// [-i MODEL] [-t] [--passes N] [--vw-model].
func runTrain(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("train", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: personalizer train --dsjson FILE [flags] (or the data file as the last argument)\n\n"+
			"Trains like vw --dsjson -d FILE with the policy's arguments and prints VW's progress and summary.\n\n")
		fs.PrintDefaults()
	}
	var (
		cfg     learner.TrainConfig
		initial string
	)
	fs.StringVar(&cfg.Data, "dsjson", "", "DSJson `file` to train on, gzip-compressed or not")
	fs.StringVar(&cfg.Data, "d", "", "same as --dsjson")
	fs.StringVar(&cfg.Policy, "policy", "", "Vowpal Wabbit arguments (default: Personalizer's \""+bandit.DefaultPolicy+"\", or the -i model's)")
	fs.StringVar(&cfg.Preds, "p", "", "write VW's predictions (one action:prob list per event) to this `file` (- for stdout)")
	fs.StringVar(&cfg.Final, "f", "", "write the final model to this `file` (the format servers load)")
	fs.BoolVar(&cfg.FinalVW, "vw-model", false, "write -f as a Vowpal Wabbit 9.11.2 model file, which vw -i reads (and -i, PUT /model take back)")
	fs.StringVar(&initial, "i", "", "continue training the model in this `file`: one of -f's, or a VW 9.x model file vw -f wrote (told apart by its header)")
	fs.BoolVar(&cfg.Test, "t", false, "test only: predict and report the loss, learn nothing")
	fs.IntVar(&cfg.Passes, "passes", 1, "passes over the data; with more than one, every tenth event is held out")
	fs.BoolVar(&cfg.HoldoutOff, "holdout_off", false, "no holdout set with several passes")
	fs.StringVar(&cfg.Readable, "readable_model", "", "write the model as text (slot:weight lines) to this `file`")
	fs.StringVar(&cfg.InvertHash, "invert_hash", "", "write the model as text with feature names to this `file`")
	fs.BoolVar(&cfg.Quiet, "quiet", false, "print only warnings")
	if err := parseFlags(fs, vwDataArgs(args), getenv); err != nil {
		return err
	}
	rest := fs.Args()
	if cfg.Data == "" && len(rest) == 1 {
		cfg.Data, rest = rest[0], nil
	}
	if len(rest) > 0 {
		fs.Usage()
		return fmt.Errorf("train: unexpected arguments %q", rest)
	}
	if cfg.Data == "" {
		fs.Usage()
		return errors.New("train needs --dsjson FILE")
	}
	if cfg.Passes < 1 {
		return fmt.Errorf("train: --passes %d must be at least 1", cfg.Passes)
	}
	if initial != "" {
		b, err := os.ReadFile(initial)
		if err != nil {
			return fmt.Errorf("train: initial model: %w", err)
		}
		cfg.Init, err = bandit.ReadAnyModel(b)
		if err != nil {
			return fmt.Errorf("train: initial model %s: %w", initial, err)
		}
	} else if cfg.Policy == "" {
		cfg.Policy = bandit.DefaultPolicy
	}
	_, err := learner.Train(ctx, cfg, stdout, stderr)
	return err
}

// vwDataArgs lets VW users write "--dsjson -d FILE" (--dsjson is a flag
// in VW, which then reads the file named by -d or --data): it drops the -d.
func vwDataArgs(args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		out = append(out, args[i])
		switch args[i] {
		case "--dsjson", "-dsjson":
			if i+1 < len(args) {
				switch args[i+1] {
				case "-d", "--d", "-data", "--data":
					i++
				}
			}
		}
	}
	return out
}

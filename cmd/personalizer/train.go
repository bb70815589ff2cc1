package main

import (
	"context"
	"errors"
	"flag"
	"io"

	"github.com/open-personalizer/personalizer/bandit"
	"github.com/open-personalizer/personalizer/learner"
)

func runTrain(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("train", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg learner.TrainConfig
	fs.StringVar(&cfg.Data, "dsjson", "", "DSJson file to train on (gzip if it ends in .gz)")
	fs.StringVar(&cfg.Data, "d", "", "same as --dsjson")
	fs.StringVar(&cfg.Policy, "policy", bandit.DefaultPolicy, "Vowpal Wabbit arguments")
	fs.StringVar(&cfg.Preds, "p", "", "write VW-style predictions (one action:prob list per event) to this file")
	fs.BoolVar(&cfg.Quiet, "quiet", false, "print only the final summary")
	if err := parseFlags(fs, args, getenv); err != nil {
		return err
	}
	if cfg.Data == "" {
		fs.Usage()
		return errors.New("train needs --dsjson FILE")
	}
	_, err := learner.Train(ctx, cfg, stdout, stderr)
	return err
}

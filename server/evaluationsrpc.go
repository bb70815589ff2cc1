package server

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/open-personalizer/personalizer/evaluate"
	"github.com/open-personalizer/personalizer/loop"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

func (s *adminService) CreateEvaluation(ctx context.Context, req *personalizerv1.CreateEvaluationRequest) (*personalizerv1.CreateEvaluationResponse, error) {
	p := req.GetEvaluation()
	c := EvaluationContract{EnableOfflineExperimentation: p.GetEnableOfflineExperimentation(), EnableFeatureImportance: p.GetEnableFeatureImportance(), Name: p.GetName(),
		StartTime: timeOrZero(p.GetStartTime()), EndTime: timeOrZero(p.GetEndTime())}
	for _, pol := range p.GetPolicies() {
		c.Policies = append(c.Policies, loop.Policy{Name: pol.GetName(), Arguments: pol.GetArguments()})
	}
	e, err := s.a.createEvaluation(ctx, req.GetLoop(), c)
	if err != nil {
		return nil, s.status(err, "InternalServerError")
	}
	return &personalizerv1.CreateEvaluationResponse{Evaluation: evaluationToProto(e)}, nil
}

func (s *adminService) GetEvaluation(ctx context.Context, req *personalizerv1.GetEvaluationRequest) (*personalizerv1.GetEvaluationResponse, error) {
	e, err := s.a.getEvaluation(ctx, req.GetLoop(), req.GetId())
	if err != nil {
		return nil, s.status(err, "InternalServerError")
	}
	return &personalizerv1.GetEvaluationResponse{Evaluation: evaluationToProto(e)}, nil
}

func (s *adminService) ListEvaluations(ctx context.Context, req *personalizerv1.ListEvaluationsRequest) (*personalizerv1.ListEvaluationsResponse, error) {
	es, err := s.a.listEvaluations(ctx, req.GetLoop())
	if err != nil {
		return nil, s.status(err, "EvaluationsGetListFailed")
	}
	resp := &personalizerv1.ListEvaluationsResponse{Evaluations: make([]*personalizerv1.Evaluation, len(es))}
	for i, e := range es {
		resp.Evaluations[i] = evaluationToProto(e)
	}
	return resp, nil
}

func (s *adminService) DeleteEvaluation(ctx context.Context, req *personalizerv1.DeleteEvaluationRequest) (*personalizerv1.DeleteEvaluationResponse, error) {
	if err := s.a.deleteEvaluation(ctx, req.GetLoop(), req.GetId()); err != nil {
		return nil, s.status(err, "InternalServerError")
	}
	return &personalizerv1.DeleteEvaluationResponse{}, nil
}

func (s *adminService) ApplyFromEvaluation(ctx context.Context, req *personalizerv1.ApplyFromEvaluationRequest) (*personalizerv1.ApplyFromEvaluationResponse, error) {
	c, err := s.a.applyFromEvaluation(ctx, req.GetLoop(), PolicyReferenceContract{EvaluationID: req.GetEvaluationId(), PolicyName: req.GetPolicyName()})
	if err != nil {
		return nil, s.status(err, "UpdateConfigurationFailed")
	}
	return &personalizerv1.ApplyFromEvaluationResponse{Policy: policyToProto(c.Policy), Version: c.Version}, nil
}

func evaluationToProto(e *Evaluation) *personalizerv1.Evaluation {
	p := &personalizerv1.Evaluation{Id: e.ID, Name: e.Name, StartTime: timestampOrNil(e.StartTime), EndTime: timestampOrNil(e.EndTime),
		JobId: e.JobID, Status: e.Status, EvaluationType: e.EvaluationType, OptimalPolicy: e.OptimalPolicy,
		CreationTime: timestampOrNil(e.CreationTime), Error: e.Error,
		Progress: &personalizerv1.EvaluationProgress{Lines: e.Progress.Lines, Evaluated: e.Progress.Evaluated, OutOfRange: e.Progress.OutOfRange}}
	for _, r := range e.PolicyResults {
		pr := &personalizerv1.PolicyResult{Name: r.Name, Arguments: r.Arguments, PolicySource: r.Source, TotalSummary: summaryToProto(&r.TotalSummary)}
		for i := range r.Summary {
			pr.Summary = append(pr.Summary, summaryToProto(&r.Summary[i]))
		}
		p.PolicyResults = append(p.PolicyResults, pr)
	}
	for _, g := range e.FeatureImportance {
		p.FeatureImportance = append(p.FeatureImportance, &personalizerv1.FeatureGroup{Names: g})
	}
	for _, f := range e.FeatureScores {
		p.FeatureScores = append(p.FeatureScores, &personalizerv1.FeatureImportanceScore{Namespace: f.Namespace, FeatureName: f.FeatureName,
			Score: f.Score, Change: f.Change, Interval: interval(f.Interval)})
	}
	return p
}

// interval is iv over gRPC; nil stays unset.
func interval(iv *evaluate.Interval) *personalizerv1.Interval {
	if iv == nil {
		return nil
	}
	return &personalizerv1.Interval{Lower: iv.Lower, Upper: iv.Upper}
}

func summaryToProto(s *evaluate.Summary) *personalizerv1.PolicyResultSummary {
	p := &personalizerv1.PolicyResultSummary{TimeStamp: timestampOrNil(s.TimeStamp), IpsEstimatorNumerator: s.IPSNumerator,
		IpsEstimatorDenominator: s.IPSDenominator, SnipsEstimatorDenominator: s.SNIPSDenominator,
		AggregateTimeWindow: durationpb.New(time.Duration(s.AggregateWindow)), NonZeroProbability: s.NonZeroProbability,
		SumOfSquares: s.SumOfSquares, ConfidenceInterval: s.ConfidenceInterval, AverageReward: s.AverageReward, Events: s.Events}
	for _, e := range s.Estimates {
		p.Estimates = append(p.Estimates, &personalizerv1.Estimate{Estimator: e.Estimator, Value: e.Value,
			Gaussian: interval(e.Gaussian), CressieRead: interval(e.Robust)})
	}
	return p
}

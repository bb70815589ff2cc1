package server

import (
	"context"
	"errors"
	"io"
	"math"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/open-personalizer/personalizer/loop"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// adminService is the gRPC AdminService of an [Admin]. Errors are answered
// with Personalizer's code first in the message ("InvalidApiAccess: ...").
type adminService struct {
	personalizerv1.UnimplementedAdminServiceServer
	a *Admin
}

// exportChunk is the size of ExportModel's chunks.
const exportChunk = 256 << 10

// status translates an admin operation's error, once.
func (s *adminService) status(err error, failCode string) error {
	e := s.a.classify(err, failCode)
	return status.Error(e.grpc, e.Error())
}

func (s *adminService) GetServiceConfiguration(ctx context.Context, req *personalizerv1.GetServiceConfigurationRequest) (*personalizerv1.GetServiceConfigurationResponse, error) {
	c, err := s.a.loopConfig(ctx, req.GetLoop())
	if err != nil {
		return nil, s.status(err, "InternalServerError")
	}
	return &personalizerv1.GetServiceConfigurationResponse{Configuration: serviceToProto(&c.Service)}, nil
}

// errNoConfiguration answers an update without its configuration.
var errNoConfiguration = &loop.Error{Code: "InvalidServiceConfiguration", Message: "The request has no configuration."}

func (s *adminService) UpdateServiceConfiguration(ctx context.Context, req *personalizerv1.UpdateServiceConfigurationRequest) (*personalizerv1.UpdateServiceConfigurationResponse, error) {
	if req.GetConfiguration() == nil {
		return nil, s.status(errNoConfiguration, "")
	}
	c, err := s.a.updateService(ctx, req.GetLoop(), serviceFromProto(req.GetConfiguration()))
	if err != nil {
		return nil, s.status(err, "UpdateConfigurationFailed")
	}
	return &personalizerv1.UpdateServiceConfigurationResponse{Configuration: serviceToProto(&c.Service), Version: c.Version}, nil
}

func (s *adminService) GetPolicy(ctx context.Context, req *personalizerv1.GetPolicyRequest) (*personalizerv1.GetPolicyResponse, error) {
	c, err := s.a.loopConfig(ctx, req.GetLoop())
	if err != nil {
		return nil, s.status(err, "InternalServerError")
	}
	return &personalizerv1.GetPolicyResponse{Policy: policyToProto(c.Policy)}, nil
}

func (s *adminService) UpdatePolicy(ctx context.Context, req *personalizerv1.UpdatePolicyRequest) (*personalizerv1.UpdatePolicyResponse, error) {
	c, err := s.a.setPolicy(ctx, req.GetLoop(), &loop.Policy{Name: req.GetPolicy().GetName(), Arguments: req.GetPolicy().GetArguments()})
	if err != nil {
		return nil, s.status(err, "UpdateConfigurationFailed")
	}
	return &personalizerv1.UpdatePolicyResponse{Policy: policyToProto(c.Policy), Version: c.Version}, nil
}

func (s *adminService) ResetPolicy(ctx context.Context, req *personalizerv1.ResetPolicyRequest) (*personalizerv1.ResetPolicyResponse, error) {
	c, err := s.a.setPolicy(ctx, req.GetLoop(), nil)
	if err != nil {
		return nil, s.status(err, "UpdateConfigurationFailed")
	}
	return &personalizerv1.ResetPolicyResponse{Policy: policyToProto(c.Policy), Version: c.Version}, nil
}

func (s *adminService) ExportModel(req *personalizerv1.ExportModelRequest, stream grpc.ServerStreamingServer[personalizerv1.ExportModelResponse]) error {
	sm, data, err := s.a.exportModel(stream.Context(), req.GetLoop(), req.GetFormat(), req.GetSigned())
	if err != nil {
		return s.status(err, "InternalServerError")
	}
	resp := &personalizerv1.ExportModelResponse{Properties: propertiesToProto(sm.info)}
	for first := true; first || len(data) > 0; first = false {
		n := min(len(data), exportChunk)
		resp.Chunk, data = data[:n], data[n:]
		if err := stream.Send(resp); err != nil {
			return err
		}
		resp = &personalizerv1.ExportModelResponse{}
	}
	return nil
}

func (s *adminService) ImportModel(stream grpc.ClientStreamingServer[personalizerv1.ImportModelRequest, personalizerv1.ImportModelResponse]) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		first, err = &personalizerv1.ImportModelRequest{}, nil
	}
	if err != nil {
		return err
	}
	name := first.GetLoop()
	if _, err := s.a.loopOf(ctx, name); err != nil { // before reading what may be a large file
		return s.status(err, "")
	}
	data := first.GetChunk()
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if int64(len(data))+int64(len(m.GetChunk())) > s.a.cfg.MaxModelBytes {
			return status.Errorf(codes.InvalidArgument, "PayloadSizeExceeded: the model file is over the limit of %d bytes", s.a.cfg.MaxModelBytes)
		}
		data = append(data, m.GetChunk()...)
	}
	info, err := s.a.importModel(ctx, name, data)
	if err != nil {
		return s.status(err, "ModelPublishFailed")
	}
	return stream.SendAndClose(&personalizerv1.ImportModelResponse{Properties: propertiesToProto(info)})
}

func (s *adminService) ResetModel(ctx context.Context, req *personalizerv1.ResetModelRequest) (*personalizerv1.ResetModelResponse, error) {
	info, err := s.a.resetModel(ctx, req.GetLoop())
	if err != nil {
		return nil, s.status(err, "ModelResetFailed")
	}
	return &personalizerv1.ResetModelResponse{Properties: propertiesToProto(info)}, nil
}

func (s *adminService) RollbackModel(ctx context.Context, req *personalizerv1.RollbackModelRequest) (*personalizerv1.RollbackModelResponse, error) {
	info, err := s.a.rollbackModel(ctx, req.GetLoop(), req.GetVersion())
	if err != nil {
		return nil, s.status(err, "ModelPublishFailed")
	}
	return &personalizerv1.RollbackModelResponse{Properties: propertiesToProto(info)}, nil
}

func (s *adminService) ListModelVersions(ctx context.Context, req *personalizerv1.ListModelVersionsRequest) (*personalizerv1.ListModelVersionsResponse, error) {
	infos, err := s.a.listModels(ctx, req.GetLoop())
	if err != nil {
		return nil, s.status(err, "InternalServerError")
	}
	out := &personalizerv1.ListModelVersionsResponse{Versions: make([]*personalizerv1.ModelProperties, len(infos))}
	for i, info := range infos {
		out.Versions[i] = propertiesToProto(info)
	}
	return out, nil
}

func (s *adminService) GetModelProperties(ctx context.Context, req *personalizerv1.GetModelPropertiesRequest) (*personalizerv1.GetModelPropertiesResponse, error) {
	sm, err := s.a.servedModel(ctx, req.GetLoop())
	if err != nil {
		return nil, s.status(err, "InternalServerError")
	}
	return &personalizerv1.GetModelPropertiesResponse{Properties: propertiesToProto(sm.info)}, nil
}

func (s *adminService) GetLogProperties(ctx context.Context, req *personalizerv1.GetLogPropertiesRequest) (*personalizerv1.GetLogPropertiesResponse, error) {
	from, to, err := s.a.logProperties(ctx, req.GetLoop())
	if err != nil {
		return nil, s.status(err, "InternalServerError")
	}
	return &personalizerv1.GetLogPropertiesResponse{From: timestamppb.New(from), To: timestamppb.New(to)}, nil
}

func (s *adminService) DeleteLogs(ctx context.Context, req *personalizerv1.DeleteLogsRequest) (*personalizerv1.DeleteLogsResponse, error) {
	if err := s.a.deleteLogs(ctx, req.GetLoop()); err != nil {
		return nil, s.status(err, "InternalServerError")
	}
	return &personalizerv1.DeleteLogsResponse{}, nil
}

func (s *adminService) CreateLoop(ctx context.Context, req *personalizerv1.CreateLoopRequest) (*personalizerv1.CreateLoopResponse, error) {
	c := loop.Default(req.GetLoop())
	c.Version = 1
	if req.GetService() != nil {
		c.Service = newLoopService(req.GetService(), c.Service)
	}
	c.Service.LastConfigurationEditDate = s.a.cfg.Now().UTC().Truncate(time.Second)
	if req.GetPolicy() != nil {
		c.Policy = loop.Policy{Name: req.GetPolicy().GetName(), Arguments: req.GetPolicy().GetArguments()}
	}
	c.Limits = limitsFromProto(req.GetLimits())
	c, err := s.a.createLoop(ctx, c)
	if err != nil {
		return nil, s.status(err, "UpdateConfigurationFailed")
	}
	return &personalizerv1.CreateLoopResponse{Loop: loopToProto(c)}, nil
}

func (s *adminService) ListLoops(ctx context.Context, _ *personalizerv1.ListLoopsRequest) (*personalizerv1.ListLoopsResponse, error) {
	cs, err := s.a.listLoops(ctx)
	if err != nil {
		return nil, s.status(err, "InternalServerError")
	}
	resp := &personalizerv1.ListLoopsResponse{Loops: make([]*personalizerv1.LoopConfiguration, len(cs))}
	for i, c := range cs {
		resp.Loops[i] = loopToProto(c)
	}
	return resp, nil
}

// GetLoop answers a loop key for its own loop too: it reads both halves
// of the configuration already.
func (s *adminService) GetLoop(ctx context.Context, req *personalizerv1.GetLoopRequest) (*personalizerv1.GetLoopResponse, error) {
	c, err := s.a.loopConfig(ctx, req.GetLoop())
	if err != nil {
		return nil, s.status(err, "InternalServerError")
	}
	return &personalizerv1.GetLoopResponse{Loop: loopToProto(c)}, nil
}

func (s *adminService) DeleteLoop(ctx context.Context, req *personalizerv1.DeleteLoopRequest) (*personalizerv1.DeleteLoopResponse, error) {
	if err := s.a.deleteLoop(ctx, req.GetLoop()); err != nil {
		return nil, s.status(err, "InternalServerError")
	}
	return &personalizerv1.DeleteLoopResponse{}, nil
}

func serviceToProto(s *loop.Service) *personalizerv1.ServiceConfiguration {
	return &personalizerv1.ServiceConfiguration{
		RewardWaitTime:            durationpb.New(time.Duration(s.RewardWaitTime)),
		DefaultReward:             s.DefaultReward,
		RewardAggregation:         s.RewardAggregation,
		ExplorationPercentage:     s.ExplorationPercentage,
		ModelExportFrequency:      durationpb.New(time.Duration(s.ModelExportFrequency)),
		LogMirrorEnabled:          s.LogMirrorEnabled,
		LogMirrorSasUri:           s.LogMirrorSasUri,
		LogRetentionDays:          s.LogRetentionDays,
		LastConfigurationEditDate: timestampOrNil(s.LastConfigurationEditDate),
		LearningMode:              s.LearningMode,
		IsAutoOptimizationEnabled: s.IsAutoOptimizationEnabled,
		AutoOptimizationFrequency: durationpb.New(time.Duration(s.AutoOptimizationFrequency)),
		AutoOptimizationStartDate: timestampOrNil(s.AutoOptimizationStartDate),

		IsInferenceExplainabilityEnabled: s.IsInferenceExplainabilityEnabled,
	}
}

func serviceFromProto(p *personalizerv1.ServiceConfiguration) loop.Service {
	return loop.Service{
		RewardWaitTime:            loop.Duration(p.GetRewardWaitTime().AsDuration()),
		DefaultReward:             p.GetDefaultReward(),
		RewardAggregation:         p.GetRewardAggregation(),
		ExplorationPercentage:     p.GetExplorationPercentage(),
		ModelExportFrequency:      loop.Duration(p.GetModelExportFrequency().AsDuration()),
		LogMirrorEnabled:          p.GetLogMirrorEnabled(),
		LogMirrorSasUri:           p.GetLogMirrorSasUri(),
		LogRetentionDays:          p.GetLogRetentionDays(),
		LearningMode:              p.GetLearningMode(),
		IsAutoOptimizationEnabled: p.GetIsAutoOptimizationEnabled(),
		AutoOptimizationFrequency: loop.Duration(p.GetAutoOptimizationFrequency().AsDuration()),
		AutoOptimizationStartDate: timeOrZero(p.GetAutoOptimizationStartDate()),

		IsInferenceExplainabilityEnabled: p.GetIsInferenceExplainabilityEnabled(),
	}
}

// newLoopService is a new loop's service configuration: p's, with the
// defaults def where p leaves a duration unset, the aggregation or the
// learning mode empty, or the log retention 0 (not a valid value).
// (Numbers such as the exploration cannot say they are unset: 0 is 0.)
func newLoopService(p *personalizerv1.ServiceConfiguration, def loop.Service) loop.Service {
	s := serviceFromProto(p)
	if p.GetRewardWaitTime() == nil {
		s.RewardWaitTime = def.RewardWaitTime
	}
	if p.GetModelExportFrequency() == nil {
		s.ModelExportFrequency = def.ModelExportFrequency
	}
	if p.GetAutoOptimizationFrequency() == nil {
		s.AutoOptimizationFrequency = def.AutoOptimizationFrequency
	}
	if s.RewardAggregation == "" {
		s.RewardAggregation = def.RewardAggregation
	}
	if s.LearningMode == "" {
		s.LearningMode = def.LearningMode
	}
	if s.LogRetentionDays == 0 {
		s.LogRetentionDays = def.LogRetentionDays
	}
	return s
}

func policyToProto(p loop.Policy) *personalizerv1.Policy {
	return &personalizerv1.Policy{Name: p.Name, Arguments: p.Arguments}
}

func loopToProto(c *loop.Config) *personalizerv1.LoopConfiguration {
	return &personalizerv1.LoopConfiguration{Loop: c.Loop, Version: c.Version, Service: serviceToProto(&c.Service), Policy: policyToProto(c.Policy),
		Limits: &personalizerv1.Limits{MaxActions: int64(c.Limits.MaxActions), MaxIdLength: int64(c.Limits.MaxIDLength),
			MaxFeatureBytes: int64(c.Limits.MaxFeatureBytes), MaxFeatures: int64(c.Limits.MaxFeatures), MaxInteractionFeatures: int64(c.Limits.MaxInteractionFeatures)}}
}

// limitsFromProto reads limits; values past an int's range saturate.
func limitsFromProto(l *personalizerv1.Limits) loop.Limits {
	n := func(v int64) int { return int(min(v, math.MaxInt)) }
	return loop.Limits{MaxActions: n(l.GetMaxActions()), MaxIDLength: n(l.GetMaxIdLength()), MaxFeatureBytes: n(l.GetMaxFeatureBytes()),
		MaxFeatures: n(l.GetMaxFeatures()), MaxInteractionFeatures: n(l.GetMaxInteractionFeatures())}
}

// SetLimits sets a loop's limits; admin keys only.
func (s *adminService) SetLimits(ctx context.Context, req *personalizerv1.SetLimitsRequest) (*personalizerv1.SetLimitsResponse, error) {
	c, err := s.a.setLimits(ctx, req.GetLoop(), limitsFromProto(req.GetLimits()))
	if err != nil {
		return nil, s.status(err, "UpdateConfigurationFailed")
	}
	return &personalizerv1.SetLimitsResponse{Loop: loopToProto(c)}, nil
}

func propertiesToProto(info *eventsv1.ModelInfo) *personalizerv1.ModelProperties {
	p := propertiesOf(info)
	return &personalizerv1.ModelProperties{CreationTime: timestampOrNil(p.created), LastModifiedTime: timestampOrNil(p.modified),
		Version: p.version, Examples: p.examples, Sha256: info.GetSha256(), RollbackOf: info.GetRollbackOf()}
}

func timestampOrNil(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func timeOrZero(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime()
}

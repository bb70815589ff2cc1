package client

import (
	"context"

	"google.golang.org/grpc/credentials"
)

// APIKey returns per-call credentials that send key the way a server
// started with --api-keys expects it, in metadata
// ocp-apim-subscription-key. Dial with
// grpc.WithPerRPCCredentials(client.APIKey(key)). The key is sent over
// plaintext connections too, for development; use TLS elsewhere.
func APIKey(key string) credentials.PerRPCCredentials { return apiKey(key) }

type apiKey string

func (k apiKey) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"ocp-apim-subscription-key": string(k)}, nil
}

func (apiKey) RequireTransportSecurity() bool { return false }

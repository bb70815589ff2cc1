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

// Loop returns per-call credentials that name the loop the calls are for,
// in metadata x-personalizer-loop, for a service that serves several:
// dial with grpc.WithPerRPCCredentials(client.Loop("shop")). A loop key's
// calls are for its own loop whatever they name (another is refused); an
// admin key, or a service without keys, serves the named loop.
func Loop(name string) credentials.PerRPCCredentials { return loopName(name) }

type loopName string

func (l loopName) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"x-personalizer-loop": string(l)}, nil
}

func (loopName) RequireTransportSecurity() bool { return false }

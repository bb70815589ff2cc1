package server

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// KeyHeader is the header that carries an API key: Personalizer's REST
// header, and the gRPC metadata key in lower case.
const KeyHeader = "Ocp-Apim-Subscription-Key"

// GuardConfig configures a [Guard].
type GuardConfig struct {
	// Loop is the loop this process serves: keys of other loops are
	// refused with PermissionDenied.
	Loop string
	// KeysFile holds one key a line: "loop sha256hex [name]", blank lines
	// and lines starting with # ignored. Empty turns authentication off.
	KeysFile string
	// AdminKeysFile holds admin keys, in the keys file's format (the loop
	// column is a label: write "*"). An admin key is accepted on any
	// server, may address any loop and may create and delete loops; its
	// requests default to the server's loop. Empty: no admin keys. With
	// neither file, authentication is off and every caller may do
	// everything.
	AdminKeysFile string
	// RateLimit is the requests per second each key may make, with bursts
	// of RateBurst; 0 means no limit. With authentication off every
	// caller shares one bucket.
	RateLimit float64
	RateBurst int
}

// Guard authenticates calls by API key and applies per-key rate limits.
// Keys are stored as SHA-256 hashes and compared in constant time; a loop
// may have any number of live keys, so keys rotate without downtime:
// add the new key, [Guard.Reload], move the clients, remove the old one,
// reload again.
type Guard struct {
	cfg  GuardConfig
	now  func() time.Time
	keys atomic.Pointer[keySet] // nil when authentication is off
	anon *rate.Limiter          // the bucket shared when authentication is off
	// servesFn reports the loops the process serves (see ServeLoops).
	servesFn atomic.Pointer[func(string) bool]
}

// keySet is one reading of the keys file.
type keySet struct {
	keys []apiKey
}

// apiKey is one line of the keys file and its rate limiter.
type apiKey struct {
	loop, name string
	admin      bool
	hash       [sha256.Size]byte
	limiter    *rate.Limiter // nil without a rate limit
}

// callerKey is the context key of the *apiKey a call authenticated with.
type callerKey struct{}

// NewGuard reads the keys file, if any.
func NewGuard(cfg GuardConfig, now func() time.Time) (*Guard, error) {
	if cfg.RateLimit < 0 || (cfg.RateLimit > 0 && cfg.RateBurst < 1) {
		return nil, fmt.Errorf("rate limit %v/s with burst %d: the rate must be positive and the burst at least 1", cfg.RateLimit, cfg.RateBurst)
	}
	g := &Guard{cfg: cfg, now: now, anon: newLimiter(cfg)}
	if g.AuthEnabled() {
		if err := g.Reload(); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// newLimiter returns a token bucket of cfg's rate, or nil for no limit.
func newLimiter(cfg GuardConfig) *rate.Limiter {
	if cfg.RateLimit == 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(cfg.RateLimit), cfg.RateBurst)
}

// AuthEnabled reports whether calls need a key.
func (g *Guard) AuthEnabled() bool { return g.cfg.KeysFile != "" || g.cfg.AdminKeysFile != "" }

// Reload reads the keys files again. Keys no longer in them are refused
// from now on; keys still in them keep their rate-limit buckets. A file
// that does not parse leaves the previous keys in force.
func (g *Guard) Reload() error {
	old := g.keys.Load()
	var ks keySet
	for _, f := range []struct {
		path  string
		admin bool
	}{{g.cfg.KeysFile, false}, {g.cfg.AdminKeysFile, true}} {
		if f.path == "" {
			continue
		}
		if err := g.read(&ks, old, f.path, f.admin); err != nil {
			return err
		}
	}
	g.keys.Store(&ks)
	return nil
}

// read adds the keys of the file at path to ks.
func (g *Guard) read(ks *keySet, old *keySet, path string, admin bool) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("api keys: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 2 || len(fields) > 3 {
			return fmt.Errorf("api keys %s:%d: want \"loop sha256hex [name]\"", path, n)
		}
		k := apiKey{loop: fields[0], name: fields[1][:min(8, len(fields[1]))], admin: admin}
		b, err := hex.DecodeString(fields[1])
		if err != nil || len(b) != sha256.Size {
			return fmt.Errorf("api keys %s:%d: the hash must be 64 hex digits (personalizer keygen prints lines)", path, n)
		}
		copy(k.hash[:], b)
		if len(fields) == 3 {
			k.name = fields[2]
		}
		for _, o := range ks.keys {
			if o.hash == k.hash {
				return fmt.Errorf("api keys %s:%d: the same key is listed twice", path, n)
			}
		}
		k.limiter = newLimiter(g.cfg)
		if old != nil {
			for _, o := range old.keys {
				if o.hash == k.hash && o.loop == k.loop && o.admin == k.admin {
					k.limiter = o.limiter
				}
			}
		}
		ks.keys = append(ks.keys, k)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("api keys: %w", err)
	}
	return nil
}

// lookup finds the key whose hash is that of key. It compares with every
// stored hash, in constant time, whatever matches.
func (ks *keySet) lookup(key string) *apiKey {
	sum := sha256.Sum256([]byte(key))
	var found *apiKey
	for i := range ks.keys {
		if subtle.ConstantTimeCompare(sum[:], ks.keys[i].hash[:]) == 1 {
			found = &ks.keys[i]
		}
	}
	return found
}

// Authenticate checks the key a gRPC call carries, in metadata
// ocp-apim-subscription-key or as "authorization: Bearer KEY". It is a
// go-grpc-middleware auth.AuthFunc.
func (g *Guard) Authenticate(ctx context.Context) (context.Context, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	return g.authenticate(ctx, keyFrom(func(k string) string {
		if vs := md.Get(k); len(vs) > 0 {
			return vs[0]
		}
		return ""
	}))
}

// keyFrom returns a call's API key from its headers (or metadata): the
// KeyHeader value, else an "Authorization: Bearer" token.
func keyFrom(get func(string) string) string {
	if k := get(KeyHeader); k != "" {
		return k
	}
	k, _ := strings.CutPrefix(get("Authorization"), "Bearer ")
	return k
}

// errBadKey is the one answer to a missing, unknown or revoked key, so that
// a caller learns nothing about which keys exist.
var errBadKey = status.Error(codes.Unauthenticated, "access denied due to a missing or invalid API key; send a valid key in "+KeyHeader)

func (g *Guard) authenticate(ctx context.Context, key string) (context.Context, error) {
	ks := g.keys.Load()
	if ks == nil {
		return ctx, nil
	}
	k := ks.lookup(key)
	if k == nil {
		return nil, errBadKey
	}
	if !k.admin && !g.serves(k.loop) {
		return nil, status.Errorf(codes.PermissionDenied, "the API key is for loop %q, which this server does not serve", k.loop)
	}
	return context.WithValue(ctx, callerKey{}, k), nil
}

// errForeignLoop answers a loop key's request for another loop.
func errForeignLoop(key, loop string) error {
	return status.Errorf(codes.PermissionDenied, "the API key is for loop %q, not loop %q", key, loop)
}

// errNotAdmin answers a loop key's request that needs an admin key.
var errNotAdmin = status.Error(codes.PermissionDenied, "this operation needs an admin API key")

// loopOf returns the loop a call authenticated by g may address when it
// names loop (empty: the default). A loop key addresses its own loop only;
// an admin key, or any caller when authentication is off, any loop, def
// (the server's) by default. A call that did not pass
// [Guard.Authenticate] while keys are required is refused.
func (g *Guard) loopOf(ctx context.Context, loop, def string) (string, error) {
	if _, ok := ctx.Value(callerKey{}).(*apiKey); !ok && g.AuthEnabled() {
		return "", errBadKey
	}
	return callerLoop(ctx, loop, def)
}

// ServeLoops tells g which loops the process serves: keys of other loops
// are refused. Without it, only [GuardConfig.Loop] is served.
func (g *Guard) ServeLoops(serves func(loop string) bool) { g.servesFn.Store(&serves) }

func (g *Guard) serves(loop string) bool {
	if f := g.servesFn.Load(); f != nil {
		return (*f)(loop)
	}
	return loop == g.cfg.Loop
}

// requireAdmin refuses a call that did not authenticate with an admin key
// while keys are required.
func (g *Guard) requireAdmin(ctx context.Context) error {
	k, ok := ctx.Value(callerKey{}).(*apiKey)
	switch {
	case !ok && g.AuthEnabled():
		return errBadKey
	case ok && !k.admin:
		return errNotAdmin
	}
	return nil
}

// Limit takes one token from the caller's bucket; it is a
// go-grpc-middleware ratelimit.Limiter (which answers ResourceExhausted)
// and runs after [Guard.Authenticate].
func (g *Guard) Limit(ctx context.Context) error {
	l := g.anon
	if k, ok := ctx.Value(callerKey{}).(*apiKey); ok {
		l = k.limiter
	}
	if l == nil || l.AllowN(g.now(), 1) {
		return nil
	}
	return fmt.Errorf("rate limit of %v requests/s (burst %d) per API key exceeded", g.cfg.RateLimit, g.cfg.RateBurst)
}

// LimitStreamMessages is a gRPC stream interceptor that charges every
// message after a stream's first to the caller's rate limit, so that a
// RankStream costs what the same ranks cost as calls (the first message
// uses the token the stream's opening took). A message over the limit
// ends the stream with ResourceExhausted.
func (g *Guard) LimitStreamMessages(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, &limitedStream{ServerStream: ss, g: g})
}

type limitedStream struct {
	grpc.ServerStream
	g    *Guard
	seen bool
}

func (s *limitedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if !s.seen {
		s.seen = true
		return nil
	}
	if err := s.g.Limit(s.Context()); err != nil {
		return status.Error(codes.ResourceExhausted, err.Error())
	}
	return nil
}

// NewKey returns a new random API key and its keys-file line.
func NewKey(loop, name string) (key, line string) {
	key = rand.Text()
	line = loop + " " + HashKey(key)
	if name != "" {
		line += " " + name
	}
	return key, line
}

// HashKey returns the hex SHA-256 of key, as the keys file stores it.
func HashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

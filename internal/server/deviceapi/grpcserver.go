package deviceapi

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	devicev1 "github.com/meshanics/meshanics/proto/meshanics/device/v1"
)

// Transport limits of the device listener (documented in docs/device-api.md).
const (
	// MaxRecvMsgSize bounds one message from a device. The largest is a
	// log chunk; agents send chunks of at most 1 MiB.
	MaxRecvMsgSize = 1<<20 + 64<<10
	// MaxSendMsgSize bounds one response (a heartbeat with assignments).
	MaxSendMsgSize = 4 << 20
	// KeepaliveMinTime: agents must not ping more often than this; agents
	// ping every 30 s or more.
	KeepaliveMinTime = 10 * time.Second
	// maxStreamsPerConn: one agent needs a handful at most.
	maxStreamsPerConn = 16
	handshakeTimeout  = 10 * time.Second
	connReadBuffer    = 16 << 10
)

const serviceName = "meshanics.device.v1.DeviceService"

// GRPCServer builds the gRPC server of the device listener with tlsConf,
// which must require and verify client certificates (ca.MutualTLSConfig).
// It registers DeviceService and the standard health service.
func (s *Server) GRPCServer(tlsConf *tls.Config) (*grpc.Server, error) {
	if tlsConf == nil || tlsConf.ClientAuth != tls.RequireAndVerifyClientCert || tlsConf.ClientCAs == nil {
		return nil, errors.New("deviceapi: the device listener needs a TLS config that requires and verifies client certificates")
	}
	gs := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsConf)),
		grpc.ConnectionTimeout(handshakeTimeout),
		grpc.MaxRecvMsgSize(MaxRecvMsgSize),
		grpc.MaxSendMsgSize(MaxSendMsgSize),
		grpc.MaxConcurrentStreams(maxStreamsPerConn),
		// Per-connection memory (issue 7: thousands of idle agents per
		// replica): the write buffer goes back to a shared pool after each
		// flush instead of staying 32 KiB per connection, and reads use a
		// 16 KiB buffer (heartbeats are tiny; large log chunks still flow).
		grpc.SharedWriteBuffer(true),
		grpc.ReadBufferSize(connReadBuffer),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             KeepaliveMinTime,
			PermitWithoutStream: true, // idle agents keep their one connection alive
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    2 * time.Minute,
			Timeout: 20 * time.Second,
		}),
		grpc.ChainUnaryInterceptor(s.unaryInterceptor),
		grpc.ChainStreamInterceptor(s.streamInterceptor),
	)
	s.Register(gs)
	return gs, nil
}

// Register adds DeviceService and the health service to gs. Use it only
// with a server built like GRPCServer's: the interceptors are what check
// identity.
func (s *Server) Register(gs *grpc.Server) {
	devicev1.RegisterDeviceServiceServer(gs, handlers{Server: s})
	hs := health.NewServer()
	hs.SetServingStatus(serviceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
}

// isDeviceMethod reports whether fullMethod belongs to DeviceService (the
// health service needs no device identity beyond the TLS handshake).
func isDeviceMethod(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, "/"+serviceName+"/")
}

func shortMethod(fullMethod string) string {
	return fullMethod[strings.LastIndexByte(fullMethod, '/')+1:]
}

// unaryInterceptor authenticates every DeviceService call, records its
// latency, and maps errors to statuses.
func (s *Server) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if !isDeviceMethod(info.FullMethod) {
		return handler(ctx, req)
	}
	start := time.Now()
	method := shortMethod(info.FullMethod)
	var resp any
	dev, err := s.authenticate(ctx)
	if err == nil {
		err = s.limit(method, dev)
	}
	if err == nil {
		resp, err = handler(withDevice(ctx, dev), req)
	}
	err = toStatus(s.log, method, err)
	s.metrics.observe(method, err, time.Since(start))
	return resp, err
}

func (s *Server) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !isDeviceMethod(info.FullMethod) {
		return handler(srv, ss)
	}
	start := time.Now()
	method := shortMethod(info.FullMethod)
	dev, err := s.authenticate(ss.Context())
	if err == nil {
		err = s.limit(method, dev)
	}
	if err == nil {
		err = handler(srv, &deviceStream{ServerStream: ss, ctx: withDevice(ss.Context(), dev)})
	}
	err = toStatus(s.log, method, err)
	s.metrics.observe(method, err, time.Since(start))
	return err
}

// limit applies the per-device write budget to every RPC but Heartbeat
// (which writes nothing).
func (s *Server) limit(method string, dev device) error {
	if method == "Heartbeat" || s.writes.allow(dev.Name, s.now()) {
		return nil
	}
	return resourceExhausted("too many requests from this device; retry later")
}

type deviceStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (d *deviceStream) Context() context.Context { return d.ctx }

// codeOf is the status code an error returned by the interceptor carries.
func codeOf(err error) string { return status.Code(err).String() }

package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// defaultServiceName is the service.name of the spans exported without
// OTEL_SERVICE_NAME.
const defaultServiceName = "asyncreply"

// telemetry is the OpenTelemetry SDK that a command which replays or
// serves exports its spans with, as the standard OTEL_* variables
// configure it. A nil *telemetry is none: nothing is traced, at no cost.
type telemetry struct {
	provider   *sdktrace.TracerProvider
	propagator propagation.TextMapPropagator
}

// traced runs a command with the telemetry the environment configures, and
// flushes its spans when the command returns. A bad OTEL_* variable is a
// usage error, as a bad flag is.
func traced(ctx context.Context, cmd string, getenv func(string) string, stderr io.Writer, run func(*telemetry) int) int {
	tel, err := startTelemetry(ctx, getenv)
	if err != nil {
		return usageFailure(stderr, cmd, err)
	}
	code := run(tel)
	if err := tel.shutdown(context.WithoutCancel(ctx)); err != nil {
		fmt.Fprintf(stderr, "asyncreply %s: exporting the last spans failed: %v\n", cmd, err)
	}
	return code
}

// startTelemetry sets up the SDK when the environment asks for an
// exporter: OTEL_TRACES_EXPORTER=otlp, or an OTLP endpoint
// (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT). It
// returns nil when none is set, when OTEL_TRACES_EXPORTER is "none", and
// when OTEL_SDK_DISABLED is "true". Spans go over OTLP/HTTP with protobuf;
// the exporter reads the other OTEL_EXPORTER_OTLP_* variables (headers,
// timeout, compression, certificates) and the SDK OTEL_TRACES_SAMPLER and
// OTEL_BSP_* from the process's environment, as every OpenTelemetry SDK
// does.
func startTelemetry(ctx context.Context, getenv func(string) string) (*telemetry, error) {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return nil, nil
	}
	endpoint := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_ENDPOINT"))
	tracesEndpoint := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
	exporter := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")))
	switch {
	case exporter == "" && endpoint == "" && tracesEndpoint == "", exporter == "none":
		return nil, nil
	case exporter != "" && exporter != "otlp":
		return nil, fmt.Errorf("OTEL_TRACES_EXPORTER=%s: only otlp and none are supported", exporter)
	}
	protocol := cmp.Or(getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"), getenv("OTEL_EXPORTER_OTLP_PROTOCOL"), "http/protobuf")
	if protocol != "http/protobuf" {
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%s: only http/protobuf is supported", protocol)
	}
	propagator, err := propagatorFromEnv(getenv("OTEL_PROPAGATORS"))
	if err != nil {
		return nil, err
	}
	var opts []otlptracehttp.Option
	switch {
	case tracesEndpoint != "": // the signal's own endpoint is used as it is
		opts = append(opts, otlptracehttp.WithEndpointURL(tracesEndpoint))
	case endpoint != "": // the base of every signal's
		opts = append(opts, otlptracehttp.WithEndpointURL(strings.TrimSuffix(endpoint, "/")+"/v1/traces"))
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT: %w", err)
	}
	res, err := resource.New(ctx, resource.WithFromEnv(), resource.WithTelemetrySDK(),
		resource.WithAttributes(semconv.ServiceName(cmp.Or(getenv("OTEL_SERVICE_NAME"), defaultServiceName))))
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		exp.Shutdown(ctx)
		return nil, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	return &telemetry{
		provider:   sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res)),
		propagator: propagator,
	}, nil
}

// propagatorFromEnv is the propagation OTEL_PROPAGATORS names, of those
// OpenTelemetry's Go API carries: tracecontext and baggage, both by default.
func propagatorFromEnv(names string) (propagation.TextMapPropagator, error) {
	if strings.TrimSpace(names) == "" {
		names = "tracecontext,baggage"
	}
	var list []propagation.TextMapPropagator
	for name := range strings.SplitSeq(names, ",") {
		switch name = strings.ToLower(strings.TrimSpace(name)); name {
		case "tracecontext":
			list = append(list, propagation.TraceContext{})
		case "baggage":
			list = append(list, propagation.Baggage{})
		case "none":
		default:
			return nil, fmt.Errorf("OTEL_PROPAGATORS: %q is not supported: tracecontext, baggage or none", name)
		}
	}
	return propagation.NewCompositeTextMapPropagator(list...), nil
}

// tracerProvider is the provider for gateway.Config: nil, the global
// no-op, without telemetry.
func (t *telemetry) tracerProvider() trace.TracerProvider {
	if t == nil {
		return nil
	}
	return t.provider
}

func (t *telemetry) textMapPropagator() propagation.TextMapPropagator {
	if t == nil {
		return nil
	}
	return t.propagator
}

// telemetryFlushTimeout bounds the export of the spans left at shutdown.
const telemetryFlushTimeout = 10 * time.Second

// shutdown exports the spans not exported yet and stops the exporter.
func (t *telemetry) shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, telemetryFlushTimeout)
	defer cancel()
	return t.provider.Shutdown(ctx)
}

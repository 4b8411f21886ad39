// Package broker publishes operations' events to message brokers, for
// consumers that already live on one: NATS JetStream (NATSPublisher) and
// RabbitMQ (AMQPPublisher), each event a CloudEvent in structured content
// mode, so that a message body is byte for byte what a webhook receives.
// Open picks the publisher from a URL.
//
// It is a package of its own so that only programs that publish link the
// broker clients.
package broker

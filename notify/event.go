// Package notify delivers an operation's terminal transitions to those who
// asked for them without polling: signed webhooks and broker events, each
// one a CloudEvents 1.0 event in its JSON format.
//
// Delivery is at least once. An event keeps its ID across redeliveries, so
// that a consumer drops the duplicates by ID.
package notify

import (
	"context"
	"encoding/json"
	"time"
)

// SpecVersion is the CloudEvents version of every Event.
const SpecVersion = "1.0"

// Event types: one per terminal status of an operation.
const (
	TypeSucceeded = "asyncreply.operation.succeeded"
	TypeFailed    = "asyncreply.operation.failed"
	TypeCanceled  = "asyncreply.operation.canceled"
)

// Event is a CloudEvents 1.0 event. Its JSON encoding is the CloudEvents
// JSON format (structured content mode, media type ContentType).
type Event struct {
	SpecVersion string `json:"specversion"`
	// ID is the same for every delivery of one transition, so that
	// consumers recognise duplicates: the operation's ID and its terminal
	// status.
	ID string `json:"id"`
	// Source identifies the producer: the operations' monitor prefix as an
	// absolute URI when one is known.
	Source string `json:"source"`
	// Type is one of TypeSucceeded, TypeFailed and TypeCanceled.
	Type string `json:"type"`
	// Subject is the operation's ID.
	Subject string    `json:"subject,omitempty"`
	Time    time.Time `json:"time"`
	// DataContentType is application/json: Data is the operation's status
	// document.
	DataContentType string          `json:"datacontenttype,omitempty"`
	Data            json.RawMessage `json:"data,omitempty"`
}

// ContentType is the media type of an Event in the CloudEvents JSON format.
const ContentType = "application/cloudevents+json"

// A Sender delivers events to one destination: a webhook URL, a NATS
// subject, a RabbitMQ exchange. Send returns nil once the destination has
// acknowledged the event, and an error otherwise, after which the caller
// sends the same event again later.
type Sender interface {
	Send(ctx context.Context, ev *Event) error
}

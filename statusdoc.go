package asyncreply

import (
	"strconv"
	"time"

	"github.com/asyncreply/asyncreply/backend"
	"github.com/asyncreply/asyncreply/internal/jsonenc"
	"github.com/asyncreply/asyncreply/internal/problem"
)

// statusDocument is the JSON representation of an operation, shared by the
// 202 answer, polls and server-sent events. Field names follow the Microsoft
// REST API guidelines; done follows Google AIP-151.
//
// The tags document the wire format and are what encoding/json would
// produce; appendJSON writes the same bytes without reflection, since the
// document is on the accept and poll paths (a test keeps the two equal).
type statusDocument struct {
	ID        string           `json:"id"`
	Status    backend.Status   `json:"status"`
	Done      bool             `json:"done"`
	CreatedAt time.Time        `json:"createdAt"`
	UpdatedAt time.Time        `json:"updatedAt"`
	ExpiresAt *time.Time       `json:"expiresAt,omitempty"`
	Progress  progressDoc      `json:"progress"`
	Error     *problem.Details `json:"error,omitempty"`
	// ResourceLocation is where a Succeeded operation's answer is, as the
	// Azure long-running operation pollers read it from the status monitor
	// (Operation-Location), which never redirects.
	ResourceLocation string      `json:"resourceLocation,omitempty"`
	Links            monitorURLs `json:"links"`
	// Callbacks are the deliveries of the client's Prefer: callback.
	Callbacks []callbackDoc `json:"callbacks,omitempty"`
}

// callbackDoc is one client callback's delivery as the status document
// shows it.
type callbackDoc struct {
	URL        string `json:"url"`
	Attempts   int    `json:"attempts"`
	LastStatus int    `json:"lastStatus"`
	// DeliveredAt is when the receiver acknowledged the event.
	DeliveredAt *time.Time `json:"deliveredAt,omitempty"`
	// Failed: no attempt follows (given up, or the address is refused).
	Failed    bool   `json:"failed,omitempty"`
	LastError string `json:"lastError,omitempty"`

	target string // the stored target it shows
}

type progressDoc struct {
	Percent int    `json:"percent"`
	Message string `json:"message"`
}

func newStatusDocument(op *backend.Operation, links monitorURLs) *statusDocument {
	doc := &statusDocument{
		ID:        op.ID,
		Status:    op.Status,
		Done:      op.Status.Done(),
		CreatedAt: op.CreatedAt.UTC(),
		UpdatedAt: op.UpdatedAt.UTC(),
		Progress:  progressDoc{Percent: op.Progress.Percent, Message: op.Progress.Message},
		Links:     links,
	}
	if !op.ExpiresAt.IsZero() {
		expires := op.ExpiresAt.UTC()
		doc.ExpiresAt = &expires
	}
	switch op.Status {
	case backend.Succeeded:
		doc.Progress.Percent = 100
		doc.ResourceLocation = links.Response
	case backend.Failed:
		doc.Error = problemFromFailure(op.Failure)
	}
	if op.Status != backend.Succeeded {
		doc.Links.Response = ""
	}
	return doc
}

func (doc *statusDocument) marshal() []byte {
	return doc.appendJSON(make([]byte, 0, 512))
}

func (doc *statusDocument) appendJSON(b []byte) []byte {
	b = append(b, `{"id":`...)
	b = jsonenc.AppendString(b, doc.ID)
	b = append(b, `,"status":`...)
	b = jsonenc.AppendString(b, string(doc.Status))
	b = append(b, `,"done":`...)
	b = strconv.AppendBool(b, doc.Done)
	b = append(b, `,"createdAt":`...)
	b = jsonenc.AppendTime(b, doc.CreatedAt)
	b = append(b, `,"updatedAt":`...)
	b = jsonenc.AppendTime(b, doc.UpdatedAt)
	if doc.ExpiresAt != nil {
		b = append(b, `,"expiresAt":`...)
		b = jsonenc.AppendTime(b, *doc.ExpiresAt)
	}
	b = append(b, `,"progress":{"percent":`...)
	b = strconv.AppendInt(b, int64(doc.Progress.Percent), 10)
	b = append(b, `,"message":`...)
	b = jsonenc.AppendString(b, doc.Progress.Message)
	b = append(b, '}')
	if doc.Error != nil {
		b = append(b, `,"error":`...)
		b = doc.Error.AppendJSON(b)
	}
	if doc.ResourceLocation != "" {
		b = append(b, `,"resourceLocation":`...)
		b = jsonenc.AppendString(b, doc.ResourceLocation)
	}
	b = append(b, `,"links":{"self":`...)
	b = jsonenc.AppendString(b, doc.Links.Self)
	if doc.Links.Response != "" {
		b = append(b, `,"response":`...)
		b = jsonenc.AppendString(b, doc.Links.Response)
	}
	b = append(b, `,"events":`...)
	b = jsonenc.AppendString(b, doc.Links.Events)
	b = append(b, '}')
	if len(doc.Callbacks) > 0 {
		b = append(b, `,"callbacks":[`...)
		for i, c := range doc.Callbacks {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"url":`...)
			b = jsonenc.AppendString(b, c.URL)
			b = append(b, `,"attempts":`...)
			b = strconv.AppendInt(b, int64(c.Attempts), 10)
			b = append(b, `,"lastStatus":`...)
			b = strconv.AppendInt(b, int64(c.LastStatus), 10)
			if c.DeliveredAt != nil {
				b = append(b, `,"deliveredAt":`...)
				b = jsonenc.AppendTime(b, *c.DeliveredAt)
			}
			if c.Failed {
				b = append(b, `,"failed":true`...)
			}
			if c.LastError != "" {
				b = append(b, `,"lastError":`...)
				b = jsonenc.AppendString(b, c.LastError)
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

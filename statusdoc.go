package asyncreply

import (
	"encoding/json"
	"time"

	"github.com/asyncreply/asyncreply/backend"
)

// statusDocument is the JSON representation of an operation, shared by the
// 202 answer, polls and server-sent events. Field names follow the Microsoft
// REST API guidelines; done follows Google AIP-151.
type statusDocument struct {
	ID        string         `json:"id"`
	Status    backend.Status `json:"status"`
	Done      bool           `json:"done"`
	CreatedAt time.Time      `json:"createdAt"`
	UpdatedAt time.Time      `json:"updatedAt"`
	ExpiresAt *time.Time     `json:"expiresAt,omitempty"`
	Progress  progressDoc    `json:"progress"`
	Error     *problem       `json:"error,omitempty"`
	Links     monitorURLs    `json:"links"`
}

type progressDoc struct {
	Percent int    `json:"percent"`
	Message string `json:"message,omitempty"`
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
	case backend.Failed:
		doc.Error = problemFromFailure(op.Failure)
	}
	if op.Status != backend.Succeeded {
		doc.Links.Response = ""
	}
	return doc
}

func (doc *statusDocument) marshal() []byte {
	b, _ := json.Marshal(doc) // cannot fail: plain fields only
	return b
}

package asyncreply

import (
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/asyncreply/asyncreply/backend"
)

// statusDocument is the JSON representation of an operation, shared by the
// 202 answer, polls and server-sent events. Field names follow the Microsoft
// REST API guidelines; done follows Google AIP-151.
//
// The tags document the wire format and are what encoding/json would
// produce; appendJSON writes the same bytes without reflection, since the
// document is on the accept and poll paths (a test keeps the two equal).
type statusDocument struct {
	ID        string         `json:"id"`
	Status    backend.Status `json:"status"`
	Done      bool           `json:"done"`
	CreatedAt time.Time      `json:"createdAt"`
	UpdatedAt time.Time      `json:"updatedAt"`
	ExpiresAt *time.Time     `json:"expiresAt,omitempty"`
	Progress  progressDoc    `json:"progress"`
	Error     *problem       `json:"error,omitempty"`
	// ResourceLocation is where a Succeeded operation's answer is, as the
	// Azure long-running operation pollers read it from the status monitor
	// (Operation-Location), which never redirects.
	ResourceLocation string      `json:"resourceLocation,omitempty"`
	Links            monitorURLs `json:"links"`
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
	b = appendJSONString(b, doc.ID)
	b = append(b, `,"status":`...)
	b = appendJSONString(b, string(doc.Status))
	b = append(b, `,"done":`...)
	b = strconv.AppendBool(b, doc.Done)
	b = append(b, `,"createdAt":`...)
	b = appendJSONTime(b, doc.CreatedAt)
	b = append(b, `,"updatedAt":`...)
	b = appendJSONTime(b, doc.UpdatedAt)
	if doc.ExpiresAt != nil {
		b = append(b, `,"expiresAt":`...)
		b = appendJSONTime(b, *doc.ExpiresAt)
	}
	b = append(b, `,"progress":{"percent":`...)
	b = strconv.AppendInt(b, int64(doc.Progress.Percent), 10)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, doc.Progress.Message)
	b = append(b, '}')
	if doc.Error != nil {
		b = append(b, `,"error":`...)
		b = doc.Error.appendJSON(b)
	}
	if doc.ResourceLocation != "" {
		b = append(b, `,"resourceLocation":`...)
		b = appendJSONString(b, doc.ResourceLocation)
	}
	b = append(b, `,"links":{"self":`...)
	b = appendJSONString(b, doc.Links.Self)
	if doc.Links.Response != "" {
		b = append(b, `,"response":`...)
		b = appendJSONString(b, doc.Links.Response)
	}
	b = append(b, `,"events":`...)
	b = appendJSONString(b, doc.Links.Events)
	return append(b, "}}"...)
}

func (p *problem) appendJSON(b []byte) []byte {
	b = append(b, `{"type":`...)
	b = appendJSONString(b, p.Type)
	b = append(b, `,"title":`...)
	b = appendJSONString(b, p.Title)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(p.Status), 10)
	if p.Detail != "" {
		b = append(b, `,"detail":`...)
		b = appendJSONString(b, p.Detail)
	}
	return append(b, '}')
}

// appendJSONTime writes t as time.Time.MarshalJSON does.
func appendJSONTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"

// appendJSONString writes s as a JSON string exactly as encoding/json does:
// HTML-significant characters, U+2028 and U+2029 escaped, invalid UTF-8
// replaced by U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

package client_test

import (
	"errors"
	"io"
	"log"
	"net/http"
	"os"

	"github.com/asyncreply/asyncreply/client"
)

// A webhook receiver: the body read as bytes, verified against the
// endpoint's secret, and each event handled once.
func ExampleVerifyWebhook() {
	secret := os.Getenv("WEBHOOK_SECRET") // whsec_…
	mux := http.NewServeMux()
	mux.HandleFunc("POST /asyncreply-events", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		ev, err := client.VerifyWebhook(secret, r.Header, body, 0)
		if errors.Is(err, client.ErrWebhookSignature) || errors.Is(err, client.ErrWebhookTimestamp) {
			http.Error(w, "invalid webhook", http.StatusUnauthorized)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		// Deliveries are at least once: skip ev.ID if it was handled.
		log.Printf("operation %s: %s", ev.Subject, ev.Type)
		w.WriteHeader(http.StatusNoContent)
	})
	log.Fatal(http.ListenAndServe(":8080", mux))
}

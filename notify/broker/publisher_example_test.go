package broker_test

import (
	"context"
	"encoding/json"
	"log"
	"time"

	"github.com/asyncreply/asyncreply/notify"
	"github.com/asyncreply/asyncreply/notify/broker"
)

// Publishing one event to RabbitMQ; a nats:// URL publishes to JetStream
// the same way.
func ExampleOpen() {
	ctx := context.Background()
	publisher, err := broker.Open(ctx, "amqp://guest:guest@127.0.0.1:5672/operations?routing_key=asyncreply.done")
	if err != nil {
		log.Fatal(err) // for example: notify: amqp exchange "operations" in virtual host "/": Exception (404) …
	}
	defer publisher.Close()

	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err = publisher.Send(ctx, &notify.Event{
		SpecVersion:     notify.SpecVersion,
		ID:              "op1.Succeeded",
		Source:          "https://api.example.com/operations/",
		Type:            notify.TypeSucceeded,
		Subject:         "op1",
		Time:            time.Now(),
		DataContentType: "application/json",
		Data:            json.RawMessage(`{"id":"op1","status":"Succeeded"}`),
	})
	if err != nil {
		log.Print(err) // not stored: send the same event again later
	}
}

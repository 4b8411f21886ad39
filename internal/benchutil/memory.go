package benchutil

import (
	"net/http"
	"net/http/httptest"
	"runtime"

	"github.com/asyncreply/asyncreply"
	"github.com/asyncreply/asyncreply/backend/memory"
)

// RetainedBytes returns the heap held per finished operation kept by the
// memory backend: the live heap after storing operations operations, each
// answered with body, minus the live heap before, divided by operations. Requests carry a credential and a browser's User-Agent, as
// recorded requests do; the memory backend drops them once the operation
// is done.
func RetainedBytes(operations int, body []byte) (perOperation float64, err error) {
	app := asyncreply.Async(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(body)
	}))
	be := memory.New(memory.Config{})
	h, shutdown, err := Serve(asyncreply.Config{Inline: true, Backend: be}, app)
	if err != nil {
		return 0, err
	}
	defer shutdown()
	req := httptest.NewRequest("GET", "/reports/7", nil)
	req.Header.Set("Authorization", "Bearer a-typical-credential-of-some-length")
	req.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36")
	before, _ := LiveMemory()
	for range operations {
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	after, _ := LiveMemory()
	runtime.KeepAlive(be)
	return (float64(after) - float64(before)) / float64(operations), nil
}

// LiveMemory returns the bytes of live heap objects and of goroutine
// stacks after two collections, the second sweeping what the first found
// dead.
func LiveMemory() (heap, stacks uint64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc, ms.StackInuse
}

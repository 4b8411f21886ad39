module github.com/asyncreply/asyncreply

go 1.26

require go.uber.org/goleak v1.3.0

require github.com/go-chi/chi/v5 v5.5.0 // indirect

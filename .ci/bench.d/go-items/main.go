// The item service of "How to Build a Go HTTP Service and Deploy It to Cloud Run with Minimal
// Docker Image", rewritten here from what the article describes, so that .ci/bench measures
// step 04 against it in the same run: the standard library only, the same four routes, items
// in a map behind a sync.RWMutex, ids "item-N" from a counter, a log line per request to stderr
// through the log package, the article's server timeouts, and Shutdown on SIGTERM. Two of the
// article's defects are not reproduced (neither changes the work done per request): errors go
// out labelled application/json, and the shutdown deadline fits Cloud Run's 10 s.
//
//	go build -trimpath -ldflags="-s -w" -o go-items . && PORT=8080 ./go-items
package main

import (
	"context"
	"encoding/json"
	"errors"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"
)

type item struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
	CreatedAt   time.Time `json:"created_at"`
}

type store struct {
	mu    sync.RWMutex
	items map[string]item
	next  int
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body)
}

func fail(w http.ResponseWriter, status int, message string) {
	writeJSON(w, status, map[string]string{"error": message})
}

func (s *store) list(w http.ResponseWriter, r *http.Request) {
	s.mu.RLock()
	all := make([]item, 0, len(s.items))
	for _, it := range s.items {
		all = append(all, it)
	}
	s.mu.RUnlock()
	writeJSON(w, http.StatusOK, all)
}

func (s *store) get(w http.ResponseWriter, r *http.Request) {
	s.mu.RLock()
	it, ok := s.items[r.PathValue("id")]
	s.mu.RUnlock()
	if !ok {
		fail(w, http.StatusNotFound, "item not found")
		return
	}
	writeJSON(w, http.StatusOK, it)
}

func (s *store) create(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Name        string `json:"name"`
		Description string `json:"description"`
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		fail(w, http.StatusBadRequest, "invalid request body")
		return
	}
	if in.Name == "" {
		fail(w, http.StatusBadRequest, "name is required")
		return
	}
	s.mu.Lock()
	s.next++
	it := item{ID: "item-" + strconv.Itoa(s.next), Name: in.Name, Description: in.Description, CreatedAt: time.Now()}
	s.items[it.ID] = it
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, it)
}

// recorder remembers the status a handler wrote, for the log line.
type recorder struct {
	http.ResponseWriter
	status int
}

func (r *recorder) WriteHeader(status int) {
	r.status = status
	r.ResponseWriter.WriteHeader(status)
}

func logged(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		log.Printf("%s %s %d %v", r.Method, r.URL.Path, rec.status, time.Since(start))
	})
}

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	s := &store{items: map[string]item{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /api/items", s.list)
	mux.HandleFunc("GET /api/items/{id}", s.get)
	mux.HandleFunc("POST /api/items", s.create)
	server := &http.Server{Addr: ":" + port, Handler: logged(mux),
		ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second}

	go func() {
		log.Printf("listening on 0.0.0.0:%s", port)
		if err := server.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
			log.Fatalf("serve: %v", err)
		}
	}()
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	<-stop
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	if err := server.Shutdown(ctx); err != nil {
		log.Printf("shutdown: %v", err)
	}
}

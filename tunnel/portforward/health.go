package portforward

import (
	"encoding/json"
	"io"
	"net/http"
)

// HealthzHandler answers 200 while session supervision runs (Live), 503 otherwise.
func (f *Forwarder) HealthzHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if err := f.Live(); err != nil {
			http.Error(w, "not live: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
}

// ReadyzHandler answers with the forwarder's Status as JSON: 200 when ready, 503 with each port's
// sessions, classified reason, last error and destination otherwise. The operator reads this body: its
// fields are a contract (controllers.TunnelReport).
func (f *Forwarder) ReadyzHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		st := f.Status()
		w.Header().Set("Content-Type", "application/json")
		if !st.Ready || f.Ready() != nil {
			st.Ready = false
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(st)
	})
}

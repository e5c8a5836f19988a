package emulator

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// adminPrefix holds the emulator's own control endpoints, for tests and demos that drive a running
// ssm-emulator process. They are not part of any AWS API and need no signature.
const adminPrefix = "/emulator/"

// FaultsJSON is the admin endpoint's form of Faults, durations as Go duration strings ("30s", "1h").
type FaultsJSON struct {
	DropEvery          string   `json:"dropEvery,omitempty"`
	ByeEvery           string   `json:"byeEvery,omitempty"`
	RefuseResume       string   `json:"refuseResume,omitempty"` // "", "empty" or "error"
	ThrottleFirst      int      `json:"throttleFirst,omitempty"`
	ThrottleRate       float64  `json:"throttleRate,omitempty"`
	IdleTimeout        string   `json:"idleTimeout,omitempty"`
	MaxSessionDuration string   `json:"maxSessionDuration,omitempty"`
	DeniedAccessKeys   []string `json:"deniedAccessKeys,omitempty"`
	ResendOrder        string   `json:"resendOrder,omitempty"` // "", "in-order" or "random"
}

// ParseRefusal reads "", "no"/"allow", "empty" or "error".
func ParseRefusal(s string) (ResumeRefusal, error) {
	switch s {
	case "", "no", "allow":
		return ResumeAllowed, nil
	case "empty":
		return ResumeEmptyToken, nil
	case "error":
		return ResumeError, nil
	}
	return 0, fmt.Errorf("%w: resume refusal %q must be empty, \"empty\" or \"error\"", ErrInvalidConfig, s)
}

// Faults converts the JSON form.
func (j FaultsJSON) Faults() (Faults, error) {
	var f Faults
	var err error
	dur := func(name, v string, dst *time.Duration) {
		if v == "" || err != nil {
			return
		}
		*dst, err = time.ParseDuration(v)
		if err != nil {
			err = fmt.Errorf("%w: %s %q is not a duration like 30s or 5m", ErrInvalidConfig, name, v)
		}
	}
	dur("dropEvery", j.DropEvery, &f.DropEvery)
	dur("byeEvery", j.ByeEvery, &f.ByeEvery)
	dur("idleTimeout", j.IdleTimeout, &f.IdleTimeout)
	dur("maxSessionDuration", j.MaxSessionDuration, &f.MaxSessionDuration)
	if err != nil {
		return f, err
	}
	if f.RefuseResume, err = ParseRefusal(j.RefuseResume); err != nil {
		return f, err
	}
	if f.ResendOrder, err = ParseResendOrder(j.ResendOrder); err != nil {
		return f, err
	}
	f.ThrottleFirst, f.ThrottleRate, f.DeniedAccessKeys = j.ThrottleFirst, j.ThrottleRate, j.DeniedAccessKeys
	return f, f.Validate()
}

// adminRoutes:
//
//	GET  /emulator/stats                          counters and sessions
//	PUT  /emulator/faults                         FaultsJSON body, replaces the knobs
//	POST /emulator/sessions/{id}/drop             drop the client websocket now
//	POST /emulator/sessions/{id}/bye              close it with 1000 "Bye"
//	POST /emulator/sessions/{id}/terminate        end the session (channel_closed)
//	POST /emulator/sessions/{id}/stop-acking?stop=false   the agent stops (or resumes) acknowledging
//	POST /emulator/sessions/{id}/pause-publication?for=10s   pause_publication, start_publication after
//	                                              the duration ("never" or a negative one: no end; 0: end now)
//	POST /emulator/sessions/{id}/corrupt-mux      the agent sends an smux frame with version 9
//	POST /emulator/drop-all                       drop every client websocket
//	POST /emulator/instances/{id}/ping-status?status=ConnectionLost
//	POST /emulator/instances/{id}/agent-version?version=3.0.196.0
func (e *Emulator) adminRoutes(mux *http.ServeMux) {
	reply := func(w http.ResponseWriter, v any, err error) {
		w.Header().Set("Content-Type", "application/json")
		if err != nil {
			code := http.StatusBadRequest
			if errors.Is(err, ErrUnknownSession) || errors.Is(err, ErrUnknownInstance) {
				code = http.StatusNotFound
			}
			w.WriteHeader(code)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
			return
		}
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET "+adminPrefix+"stats", func(w http.ResponseWriter, r *http.Request) {
		reply(w, map[string]any{"stats": e.Stats(), "sessions": e.Sessions(), "instances": e.Instances()}, nil)
	})
	mux.HandleFunc("PUT "+adminPrefix+"faults", func(w http.ResponseWriter, r *http.Request) {
		var j FaultsJSON
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&j); err != nil {
			reply(w, nil, fmt.Errorf("%w: faults body: %v", ErrInvalidConfig, err))
			return
		}
		f, err := j.Faults()
		if err == nil {
			err = e.SetFaults(f)
		}
		reply(w, j, err)
	})
	sessionOp := func(op func(string) error) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			reply(w, map[string]string{"ok": "true"}, op(r.PathValue("id")))
		}
	}
	mux.HandleFunc("POST "+adminPrefix+"sessions/{id}/drop", sessionOp(e.DropClient))
	mux.HandleFunc("POST "+adminPrefix+"sessions/{id}/bye", sessionOp(e.ByeClient))
	mux.HandleFunc("POST "+adminPrefix+"sessions/{id}/terminate", sessionOp(e.TerminateSession))
	mux.HandleFunc("POST "+adminPrefix+"sessions/{id}/corrupt-mux", sessionOp(e.CorruptMux))
	mux.HandleFunc("POST "+adminPrefix+"sessions/{id}/stop-acking", func(w http.ResponseWriter, r *http.Request) {
		stop := true
		if v := r.URL.Query().Get("stop"); v != "" {
			var err error
			if stop, err = strconv.ParseBool(v); err != nil {
				reply(w, nil, fmt.Errorf("%w: stop=%q must be true or false", ErrInvalidConfig, v))
				return
			}
		}
		reply(w, map[string]bool{"stopAcking": stop}, e.StopAcking(r.PathValue("id"), stop))
	})
	mux.HandleFunc("POST "+adminPrefix+"sessions/{id}/pause-publication", func(w http.ResponseWriter, r *http.Request) {
		d, err := parsePauseFor(r.URL.Query().Get("for"))
		if err != nil {
			reply(w, nil, err)
			return
		}
		reply(w, map[string]string{"ok": "true"}, e.PausePublication(r.PathValue("id"), d))
	})
	mux.HandleFunc("POST "+adminPrefix+"drop-all", func(w http.ResponseWriter, r *http.Request) {
		reply(w, map[string]int{"dropped": e.DropAllClients()}, nil)
	})
	mux.HandleFunc("POST "+adminPrefix+"instances/{id}/ping-status", func(w http.ResponseWriter, r *http.Request) {
		reply(w, map[string]string{"ok": "true"}, e.SetPingStatus(r.PathValue("id"), r.URL.Query().Get("status")))
	})
	mux.HandleFunc("POST "+adminPrefix+"instances/{id}/agent-version", func(w http.ResponseWriter, r *http.Request) {
		reply(w, map[string]string{"ok": "true"}, e.SetAgentVersion(r.PathValue("id"), r.URL.Query().Get("version")))
	})
}

// parsePauseFor reads the pause-publication endpoint's duration: a Go duration, or "" or "never" for a
// pause without an end.
func parsePauseFor(v string) (time.Duration, error) {
	if v == "" || v == "never" {
		return -1, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%w: for=%q must be a duration like 10s, or never", ErrInvalidConfig, v)
	}
	return d, nil
}

// Package metrics holds mxguard's Prometheus collectors (INTERFACE.md §6).
// One Metrics value is created at start and handed to every component.
package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"mxguard/internal/buildinfo"
)

// Metrics groups every collector; names start with mxguard_.
type Metrics struct {
	Registry      *prometheus.Registry
	Connections   *prometheus.CounterVec   // listener, result
	Messages      *prometheus.CounterVec   // direction, result
	Recipients    *prometheus.CounterVec   // result
	Events        *prometheus.CounterVec   // type
	EventsActive  *prometheus.GaugeVec     // type
	BlocksActive  prometheus.Gauge         //
	SpoolMessages prometheus.Gauge         //
	SpoolBytes    prometheus.Gauge         //
	ServerUp      *prometheus.GaugeVec     // address
	CheckDuration *prometheus.HistogramVec // check
	Scans         *prometheus.CounterVec   // scanner, result
	Observations  *prometheus.CounterVec   // kind
	Panics        prometheus.Counter
	SessionLimits *prometheus.CounterVec // listener, limit
	Stress        *prometheus.GaugeVec   // listener

	// SpoolQuarantined counts message files moved to corrupt/ because
	// their checksum or layout is wrong; SpoolUnreadable is the number of
	// message files the spool could not read for another reason (an I/O
	// error) and keeps retrying.
	SpoolQuarantined prometheus.Counter
	SpoolUnreadable  prometheus.Gauge

	// RelayLocalErrors counts downstream connections that failed for a
	// local reason (errno), which no delivery server is blamed for.
	RelayLocalErrors *prometheus.CounterVec // errno
	// Auth counts authentications by service (submission, imap, pop3,
	// ...) and result (success, failure, refused: a blocked source's
	// attempt); PolicyRequests counts the requests of the policy front ends
	// (front_end dovecot, postfix) by what they answered.
	Auth           *prometheus.CounterVec // service, result
	PolicyRequests *prometheus.CounterVec // front_end, action
	// QueueMessages is the size of each queue the outbound_queue rules
	// watch, at the last poll.
	QueueMessages *prometheus.GaugeVec // queue
	// Alerts counts alert messages by channel (webhook, email) and result
	// (sent, failed after its retries, dropped: an alert that found its
	// channel's queue or digest full).
	Alerts *prometheus.CounterVec // channel, result
	// EventsDeleted counts the ended events storage.retention deleted.
	EventsDeleted prometheus.Counter
	// ShadowWouldBlock counts what shadow rules (rules[].mode: shadow)
	// would have refused: each firing, and each later observation of the
	// event's source or account while it lasts.
	ShadowWouldBlock *prometheus.CounterVec // rule

	// Recent holds the last hour's messages and refused connections per
	// minute, fed by Message and Connection (the console's chart).
	Recent *Recent

	clusterOnce sync.Once
	clusterUp   prometheus.Gauge // EnableCluster
}

// New creates and registers every collector on a fresh registry.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Recent:   NewRecent(systemClock{}),
		Connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mxguard_connections_total", Help: "Connections by listener and result (accepted, blocked, limit, blocklist, dnsbl, proxy_error).",
		}, []string{"listener", "result"}),
		Messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mxguard_messages_total", Help: "Messages by direction (inbound, outbound) and result (relayed, spooled, rejected, deferred, failed).",
		}, []string{"direction", "result"}),
		Recipients: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mxguard_recipients_total", Help: "Recipients by result (accepted, unknown, relay_denied, deferred, blocked).",
		}, []string{"result"}),
		Events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mxguard_events_total", Help: "Events started, by type.",
		}, []string{"type"}),
		EventsActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mxguard_events_active", Help: "Events currently active, by type.",
		}, []string{"type"}),
		BlocksActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mxguard_blocks_active", Help: "Sources currently blocked.",
		}),
		SpoolMessages: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mxguard_spool_messages", Help: "Messages in the spool.",
		}),
		SpoolBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mxguard_spool_bytes", Help: "Bytes in the spool.",
		}),
		SpoolQuarantined: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mxguard_spool_quarantined_total", Help: "Spool message files moved to corrupt/ because their checksum or layout is wrong.",
		}),
		SpoolUnreadable: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mxguard_spool_unreadable_files", Help: "Spool message files that could not be read (I/O error) and are being retried.",
		}),
		ServerUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mxguard_server_up", Help: "1 when the delivery server is up.",
		}, []string{"address"}),
		CheckDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mxguard_check_duration_seconds", Help: "Duration of pipeline checks.",
			Buckets: []float64{.0001, .0005, .001, .005, .01, .05, .1, .5, 1, 5},
		}, []string{"check"}),
		Scans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mxguard_scans_total", Help: "Content scanner calls by scanner (rspamd, spamd, clamd) and result (clean, spam, virus, defer, error, timeout, busy).",
		}, []string{"scanner", "result"}),
		Observations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mxguard_observations_total", Help: "Observations fed to the detection engine, by kind.",
		}, []string{"kind"}),
		Auth: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mxguard_auth_total", Help: "Authentications by service (submission, imap, pop3, ...) and result (success, failure, refused).",
		}, []string{"service", "result"}),
		PolicyRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mxguard_policy_requests_total", Help: "Policy front end requests by front end and answer: dovecot (allow, reject, report, bad_request, unauthorized, too_large, peer_refused), postfix (dunno, reject, defer, 421, bad_request, peer_refused, busy).",
		}, []string{"front_end", "action"}),
		QueueMessages: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mxguard_queue_messages", Help: "Messages in each watched outbound queue (spool, dir:..., command:...) at the last poll.",
		}, []string{"queue"}),
		Alerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mxguard_alerts_total", Help: "Alert messages by channel (webhook, email) and result (sent, failed, dropped).",
		}, []string{"channel", "result"}),
		EventsDeleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mxguard_events_deleted_total", Help: "Ended events deleted by storage.retention.",
		}),
		ShadowWouldBlock: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mxguard_shadow_would_block_total", Help: "What shadow rules would have blocked or suspended: their events' firing observations and every later observation of the same source or account while the event lasts, by rule.",
		}, []string{"rule"}),
		Panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mxguard_session_panics_total", Help: "Sessions ended by a recovered panic.",
		}),
		SessionLimits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mxguard_session_limits_total", Help: "Sessions closed with 421 by a session limit, by listener and limit (timeout, session_time, junk, errors).",
		}, []string{"listener", "limit"}),
		Stress: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mxguard_stress", Help: "1 while the listener is in stress mode (open sessions above 80% of max_connections: shortened timeouts).",
		}, []string{"listener"}),
		RelayLocalErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mxguard_relay_local_errors_total", Help: "Connections to delivery servers that failed for a local reason (EMFILE, ENFILE, EADDRNOTAVAIL, ENOBUFS); not counted against the server.",
		}, []string{"errno"}),
	}
	m.Registry.MustRegister(m.Connections, m.Messages, m.Recipients, m.Events, m.EventsActive,
		m.BlocksActive, m.SpoolMessages, m.SpoolBytes, m.ServerUp, m.CheckDuration,
		m.Scans, m.Observations, m.Panics, m.SpoolQuarantined, m.SpoolUnreadable, m.SessionLimits, m.Stress, m.RelayLocalErrors, m.Auth, m.PolicyRequests, m.QueueMessages, m.Alerts, m.EventsDeleted, m.ShadowWouldBlock,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfoGauge(buildinfo.Read()))
	return m
}

// buildInfoGauge is mxguard_build_info, always 1, with the build in its
// labels (the Prometheus convention for info metrics): a dashboard joins
// on it to show which version runs where, and a rollout is seen as the
// version label changing.
func buildInfoGauge(b buildinfo.Info) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "mxguard_build_info", Help: "Always 1; the labels name the running build (version as mxguard version prints it, Go version, VCS revision).",
		ConstLabels: prometheus.Labels{"version": b.Short(), "goversion": b.Go, "revision": b.Revision},
	})
	g.Set(1)
	return g
}

// Prime creates the series operators and alert rules expect from the first
// scrape (a vector shows no series until a label value is used): every
// event type, the listener's connection results, the message results and
// every check of the pipeline, all at zero.
func (m *Metrics) Prime(listener string, eventTypes, checks []string) {
	for _, r := range []string{"accepted", "blocked", "refused", "dnsbl", "limit", "busy", "proxy_error"} {
		m.Connections.WithLabelValues(listener, r)
	}
	for _, l := range []string{"timeout", "session_time", "junk", "errors"} {
		m.SessionLimits.WithLabelValues(listener, l)
	}
	m.Stress.WithLabelValues(listener)
	for _, r := range []string{"relayed", "spooled", "rejected", "deferred"} {
		m.Messages.WithLabelValues("inbound", r)
	}
	for _, t := range eventTypes {
		m.Events.WithLabelValues(t)
		m.EventsActive.WithLabelValues(t)
	}
	for _, c := range checks {
		m.CheckDuration.WithLabelValues(c)
	}
}

// EnableCluster registers and returns mxguard_cluster_redis_up, shown only
// when cluster.redis is set (a standalone node has no Redis to be down).
func (m *Metrics) EnableCluster() prometheus.Gauge {
	m.clusterOnce.Do(func() {
		m.clusterUp = prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mxguard_cluster_redis_up", Help: "1 while this node reaches the cluster's Redis (cluster.redis), 0 while it protects with its own state alone.",
		})
		m.Registry.MustRegister(m.clusterUp)
	})
	return m.clusterUp
}

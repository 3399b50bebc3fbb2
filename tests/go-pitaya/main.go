// Command gopitaya runs one real Go Pitaya (v3) server in cluster mode
// (NATS RPC + etcd service discovery) so that Kiwano's tests can check
// interoperability with Pitaya's cluster protocol. It plays either side of
// the cluster-demo contract: a "connector" frontend or a "room" backend.
//
// Once the server has started and registered itself in etcd it prints exactly
// one line, `gopitaya ready id=<id> type=<type>`, to stdout. All logging goes
// to stderr.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	pitaya "github.com/topfreegames/pitaya/v3/pkg"
	"github.com/topfreegames/pitaya/v3/pkg/acceptor"
	"github.com/topfreegames/pitaya/v3/pkg/config"
	"github.com/topfreegames/pitaya/v3/pkg/groups"
	"github.com/topfreegames/pitaya/v3/pkg/logger"
	logruswrapper "github.com/topfreegames/pitaya/v3/pkg/logger/logrus"
	"github.com/topfreegames/pitaya/v3/pkg/tracing"
)

// Route dictionary shared by both sides (only the frontend really needs it,
// but setting it everywhere keeps the two processes consistent).
var routeDict = map[string]uint16{
	"connector.getsessiondata": 1,
	"connector.setsessiondata": 2,
	"room.room.getsessiondata": 3,
	"onMessage":                4,
	"onMembers":                5,
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func main() {
	svType := flag.String("type", "connector", "server type: connector (frontend) or room (backend)")
	id := flag.String("id", "", "server id (default: a random UUID chosen by pitaya)")
	natsURL := flag.String("nats", "nats://127.0.0.1:4222", "NATS URL used for cluster RPC")
	etcd := flag.String("etcd", "127.0.0.1:2379", "etcd endpoints, comma-separated")
	prefix := flag.String("prefix", "pitaya/", "etcd key prefix for service discovery")
	tcpAddr := flag.String("tcp", "127.0.0.1:3250", "TCP acceptor address (connector only)")
	logLevel := flag.String("loglevel", "info", "log level for pitaya's logger (debug, info, warn, error)")
	flag.Parse()

	// Pitaya's default logrus logger already writes to stderr; set the level.
	lvl, err := logrus.ParseLevel(*logLevel)
	if err != nil {
		fmt.Fprintf(os.Stderr, "gopitaya: bad -loglevel %q: %v\n", *logLevel, err)
		os.Exit(2)
	}
	plog := logrus.New()
	plog.Out = os.Stderr
	plog.Formatter = new(logrus.TextFormatter)
	plog.Level = lvl
	logger.SetLogger(logruswrapper.NewWithFieldLogger(plog.WithField("source", "pitaya")))

	// Traces over OTLP/gRPC when the standard variables ask for them, as a Pitaya v3
	// game server does it (pitaya's tracing.InitializeOtel reads OTEL_*).
	if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" {
		if err := tracing.InitializeOtel(); err != nil {
			fmt.Fprintf(os.Stderr, "gopitaya: cannot initialize OpenTelemetry: %v\n", err)
			os.Exit(2)
		}
	}

	var frontend bool
	switch *svType {
	case "connector":
		frontend = true
	case "room":
		frontend = false
	default:
		fmt.Fprintf(os.Stderr, "gopitaya: -type must be connector or room, got %q\n", *svType)
		os.Exit(2)
	}

	conf := config.NewDefaultPitayaConfig()
	conf.Cluster.RPC.Server.Nats.Connect = *natsURL
	conf.Cluster.RPC.Client.Nats.Connect = *natsURL
	conf.Cluster.SD.Etcd.Endpoints = splitList(*etcd)
	conf.Cluster.SD.Etcd.Prefix = *prefix

	builder := pitaya.NewDefaultBuilder(frontend, *svType, pitaya.Cluster, map[string]string{}, *conf)
	// NewBuilder always picks a random UUID for the server id. Every cluster
	// component (etcd SD, NATS RPC server/client, the app) holds the same
	// *cluster.Server pointer and only reads ID once started, so overriding
	// it here, before Build/Start, changes the id everywhere.
	if *id != "" {
		builder.Server.ID = *id
	}
	if frontend {
		builder.AddAcceptor(acceptor.NewTCPAcceptor(*tcpAddr))
	}
	builder.Groups = groups.NewMemoryGroupService(builder.Config.Groups.Memory)
	app := builder.Build()

	if frontend {
		registerConnector(app)
	} else {
		registerRoom(app)
	}
	if err := app.SetDictionary(routeDict); err != nil {
		logger.Log.Errorf("setting route dictionary: %s", err)
	}

	// Pitaya's Start installs its own SIGINT/SIGTERM handler right after its
	// start-up phase (when IsRunning turns true), and that handler closes the
	// die channel itself. Before that point we turn a signal into
	// app.Shutdown(); afterwards we leave it to Pitaya (calling Shutdown as
	// well could race it into closing the channel twice).
	var stopping atomic.Bool
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		for s := range sigs {
			if !app.IsRunning() {
				logger.Log.Warnf("got %s during start-up, shutting down", s)
				stopping.Store(true)
				app.Shutdown()
			}
		}
	}()

	// app.IsRunning becomes true at the end of Start's start-up phase, after
	// every module's Init/AfterInit ran; the etcd service discovery module is
	// always the last one and registers this server in etcd during its Init.
	go func() {
		for !app.IsRunning() {
			time.Sleep(20 * time.Millisecond)
		}
		if stopping.Load() {
			return
		}
		fmt.Fprintf(os.Stdout, "gopitaya ready id=%s type=%s\n", app.GetServerID(), *svType)
		os.Stdout.Sync()
	}()

	app.Start()
	logger.Log.Info("gopitaya stopped")
}

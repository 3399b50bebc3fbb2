package main

import (
	"context"
	"strings"

	pitaya "github.com/topfreegames/pitaya/v3/pkg"
	"github.com/topfreegames/pitaya/v3/pkg/component"

	"kiwano.test/gopitaya/protos"
)

// SessionData is the JSON body of the get/set session data routes:
// {"Data":{...}} (no json tag, so the key keeps the Go field name).
type SessionData struct {
	Data map[string]interface{}
}

// Connector holds the frontend's client-facing handlers.
type Connector struct {
	component.Base
	app pitaya.Pitaya
}

// ConnectorRemote holds the frontend's server-to-server remotes.
type ConnectorRemote struct {
	component.Base
	app pitaya.Pitaya
}

// GetSessionData answers connector.getsessiondata with the session's data.
func (c *Connector) GetSessionData(ctx context.Context) (*SessionData, error) {
	s := c.app.GetSessionFromCtx(ctx)
	return &SessionData{Data: s.GetData()}, nil
}

// SetSessionData answers connector.setsessiondata: it replaces the session's
// data with the body's Data map.
func (c *Connector) SetSessionData(ctx context.Context, in *SessionData) (*protos.Response, error) {
	s := c.app.GetSessionFromCtx(ctx)
	if err := s.SetData(in.Data); err != nil {
		return nil, pitaya.Error(err, "CN-000", map[string]string{"failed": "set data"})
	}
	return &protos.Response{Code: 200, Msg: "success"}, nil
}

// RemoteFunc answers the remote connector.connectorremote.remotefunc by
// echoing the message back.
func (c *ConnectorRemote) RemoteFunc(ctx context.Context, in *protos.RPCMsg) (*protos.RPCRes, error) {
	return &protos.RPCRes{Msg: in.GetMsg()}, nil
}

func registerConnector(app pitaya.Pitaya) {
	app.Register(&Connector{app: app},
		component.WithName("connector"),
		component.WithNameFunc(strings.ToLower),
	)
	app.RegisterRemote(&ConnectorRemote{app: app},
		component.WithName("connectorremote"),
		component.WithNameFunc(strings.ToLower),
	)
}

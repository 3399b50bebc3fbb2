package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"
	pitaya "github.com/topfreegames/pitaya/v3/pkg"
	"github.com/topfreegames/pitaya/v3/pkg/component"
	"github.com/topfreegames/pitaya/v3/pkg/constants"
	"github.com/topfreegames/pitaya/v3/pkg/logger"

	"kiwano.test/gopitaya/protos"
)

const roomGroup = "room"

// Room is the backend component; it is registered both as handler and as
// remote component under the name "room".
type Room struct {
	component.Base
	app pitaya.Pitaya
}

// Init creates the (per-process, in-memory) group every joiner goes into.
// Pitaya calls it twice, as the component is registered both as handler and
// as remote, so an existing group is fine.
func (r *Room) Init() {
	err := r.app.GroupCreate(context.Background(), roomGroup)
	if err != nil && !errors.Is(err, constants.ErrGroupAlreadyExists) {
		logger.Log.Warnf("creating group %q: %s", roomGroup, err)
	}
}

// Entry binds the session to a fresh UUID.
func (r *Room) Entry(ctx context.Context, _ []byte) (*protos.JoinResponse, error) {
	s := r.app.GetSessionFromCtx(ctx)
	if err := s.Bind(ctx, uuid.New().String()); err != nil {
		return nil, pitaya.Error(err, "RH-000", map[string]string{"failed": "bind"})
	}
	return &protos.JoinResponse{Result: "ok"}, nil
}

// Join adds the session's uid to the room group, pushes the member list to
// the joiner and announces the newcomer to the whole group.
func (r *Room) Join(ctx context.Context) (*protos.JoinResponse, error) {
	s := r.app.GetSessionFromCtx(ctx)
	uid := s.UID()
	member, err := r.app.GroupContainsMember(ctx, roomGroup, uid)
	if err != nil {
		return nil, pitaya.Error(err, "RH-000", map[string]string{"failed": "join"})
	}
	if !member {
		if err := r.app.GroupAddMember(ctx, roomGroup, uid); err != nil {
			return nil, pitaya.Error(err, "RH-000", map[string]string{"failed": "join"})
		}
	}
	members, err := r.app.GroupMembers(ctx, roomGroup)
	if err != nil {
		return nil, pitaya.Error(err, "RH-000", map[string]string{"failed": "members"})
	}
	if err := s.Push("onMembers", &protos.AllMembers{Members: members}); err != nil {
		logger.Log.Errorf("pushing onMembers: %s", err)
	}
	newUser := &protos.NewUser{Content: fmt.Sprintf("New user: %d", s.ID())}
	if err := r.app.GroupBroadcast(ctx, "connector", roomGroup, "onNewUser", newUser); err != nil {
		logger.Log.Errorf("broadcasting onNewUser: %s", err)
	}
	return &protos.JoinResponse{Result: "success"}, nil
}

// Leave removes the session's uid from the room group.
func (r *Room) Leave(ctx context.Context) ([]byte, error) {
	s := r.app.GetSessionFromCtx(ctx)
	if err := r.app.GroupRemoveMember(ctx, roomGroup, s.UID()); err != nil {
		return nil, pitaya.Error(err, "RH-000", map[string]string{"failed": "leave"})
	}
	return []byte("success"), nil
}

// Message (a notify) relays a chat message to the whole group as onMessage.
func (r *Room) Message(ctx context.Context, msg *protos.UserMessage) {
	if err := r.app.GroupBroadcast(ctx, "connector", roomGroup, "onMessage", msg); err != nil {
		logger.Log.Errorf("broadcasting onMessage: %s", err)
	}
}

// GetSessionData answers room.room.getsessiondata with the (backend copy of
// the) session's data.
func (r *Room) GetSessionData(ctx context.Context) (*SessionData, error) {
	s := r.app.GetSessionFromCtx(ctx)
	return &SessionData{Data: s.GetData()}, nil
}

// SetSessionData replaces the session's data and pushes it to the frontend.
func (r *Room) SetSessionData(ctx context.Context, in *SessionData) ([]byte, error) {
	s := r.app.GetSessionFromCtx(ctx)
	if err := s.SetData(in.Data); err != nil {
		return nil, pitaya.Error(err, "RH-000", map[string]string{"failed": "set data"})
	}
	if err := s.PushToFront(ctx); err != nil {
		return nil, pitaya.Error(err, "RH-000", map[string]string{"failed": "push to front"})
	}
	return []byte("success"), nil
}

// NotifyPush (a notify) sends a testPush to the caller through the frontend.
func (r *Room) NotifyPush(ctx context.Context) {
	s := r.app.GetSessionFromCtx(ctx)
	if _, err := r.app.SendPushToUsers("testPush", &protos.RPCMsg{Msg: "test"}, []string{s.UID()}, "connector"); err != nil {
		logger.Log.Errorf("sending testPush: %s", err)
	}
}

// SendRPC makes an RPC to the given server and route and returns its reply.
func (r *Room) SendRPC(ctx context.Context, msg *protos.SendRPCMsg) (*protos.RPCRes, error) {
	ret := &protos.RPCRes{}
	if err := r.app.RPCTo(ctx, msg.GetServerId(), msg.GetRoute(), ret, &protos.RPCMsg{Msg: msg.GetMsg()}); err != nil {
		return nil, pitaya.Error(err, "RPC-000")
	}
	return ret, nil
}

func registerRoom(app pitaya.Pitaya) {
	room := &Room{app: app}
	app.Register(room,
		component.WithName("room"),
		component.WithNameFunc(strings.ToLower),
	)
	app.RegisterRemote(room,
		component.WithName("room"),
		component.WithNameFunc(strings.ToLower),
	)
}

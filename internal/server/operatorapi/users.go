package operatorapi

import (
	"fmt"
	"net/http"
	"regexp"
	"time"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/httpjson"
	"github.com/meshanics/meshanics/internal/server/store"
)

func (a *API) registerUsers(mux *http.ServeMux) {
	a.handle(mux, "GET /api/v1/users", UsersManage, a.listUsers)
	a.handle(mux, "POST /api/v1/users", UsersManage, a.createUser)
	a.handle(mux, "PATCH /api/v1/users/{name}", UsersManage, a.updateUser)
	a.handle(mux, "DELETE /api/v1/users/{name}", UsersManage, a.deleteUser)
}

// userNameRE is the shape of user names.
var userNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

func validateUserName(s string) error {
	if !userNameRE.MatchString(s) {
		return errdefs.Invalid("user name must match [a-z0-9][a-z0-9._-]{0,62}")
	}
	return nil
}

func validateRole(s string) (Role, error) {
	r, ok := ParseRole(s)
	if !ok {
		return "", errdefs.Invalid("role must be admin, operator, approver or viewer")
	}
	return r, nil
}

type userJSON struct {
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	CreatedAt time.Time `json:"created_at"`
}

func toUserJSON(u store.User) userJSON {
	return userJSON{Name: u.Name, Role: u.Role, CreatedAt: u.CreatedAt}
}

func (a *API) listUsers(w http.ResponseWriter, r *http.Request, _ Principal) error {
	return writePage(w, r, func(p store.Page) ([]userJSON, int, error) {
		users, total, err := a.store.ListUsers(r.Context(), p)
		if err != nil {
			return nil, 0, fmt.Errorf("list users: %w", err)
		}
		return convert(users, toUserJSON), total, nil
	})
}

type createUserRequest struct {
	Name     string `json:"name"`
	Role     string `json:"role"`
	Password string `json:"password"`
}

func (a *API) createUser(w http.ResponseWriter, r *http.Request, p Principal) error {
	var req createUserRequest
	if err := decodeJSON(w, r, 0, &req); err != nil {
		return err
	}
	if err := validateUserName(req.Name); err != nil {
		return err
	}
	role, err := validateRole(req.Role)
	if err != nil {
		return err
	}
	if err := ValidatePassword(req.Password); err != nil {
		return err
	}
	ctx := r.Context()
	var hash string
	if err := a.withHashSlot(ctx, func() { hash = HashPassword(req.Password, a.argon2) }); err != nil {
		return err
	}
	var u store.User
	err = a.store.Tx(ctx, func(tx *store.Tx) error {
		var err error
		u, err = tx.CreateUser(ctx, p.Actor(), req.Name, string(role), hash) // appends user.create
		return err
	})
	if err != nil {
		return fmt.Errorf("create user: %w", err)
	}
	httpjson.Write(w, http.StatusCreated, toUserJSON(u))
	return nil
}

func (a *API) deleteUser(w http.ResponseWriter, r *http.Request, p Principal) error {
	name := r.PathValue("name")
	if err := validateUserName(name); err != nil {
		return errdefs.NotFound("user not found")
	}
	if p.Kind == "user" && p.Name == name {
		return errdefs.Conflict("you cannot delete the user you are logged in as")
	}
	ctx := r.Context()
	err := a.store.Tx(ctx, func(tx *store.Tx) error {
		return tx.DeleteUser(ctx, p.Actor(), name) // appends user.delete
	})
	if err != nil {
		return fmt.Errorf("delete user: %w", err)
	}
	writeNoContent(w)
	return nil
}

type updateUserRequest struct {
	Role     *string `json:"role"`
	Password *string `json:"password"`
}

// updateUser changes a user's role and/or password; a new password ends the
// user's sessions.
func (a *API) updateUser(w http.ResponseWriter, r *http.Request, p Principal) error {
	name := r.PathValue("name")
	if err := validateUserName(name); err != nil {
		return errdefs.NotFound("user not found")
	}
	var req updateUserRequest
	if err := decodeJSON(w, r, 0, &req); err != nil {
		return err
	}
	if req.Role == nil && req.Password == nil {
		return errdefs.Invalid("give role and/or password")
	}
	if req.Role != nil {
		if _, err := validateRole(*req.Role); err != nil {
			return err
		}
		if p.Kind == "user" && p.Name == name && *req.Role != string(p.Role) {
			return errdefs.Conflict("you cannot change your own role")
		}
	}
	ctx := r.Context()
	var hash *string
	if req.Password != nil {
		if err := ValidatePassword(*req.Password); err != nil {
			return err
		}
		var h string
		if err := a.withHashSlot(ctx, func() { h = HashPassword(*req.Password, a.argon2) }); err != nil {
			return err
		}
		hash = &h
	}
	var u store.User
	err := a.store.Tx(ctx, func(tx *store.Tx) error {
		var err error
		u, err = tx.UpdateUser(ctx, p.Actor(), name, req.Role, hash) // appends user.update
		return err
	})
	if err != nil {
		return fmt.Errorf("update user: %w", err)
	}
	httpjson.Write(w, http.StatusOK, toUserJSON(u))
	return nil
}

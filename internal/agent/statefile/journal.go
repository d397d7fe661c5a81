package statefile

import (
	"fmt"

	"github.com/meshanics/meshanics/internal/artifact"
	"github.com/meshanics/meshanics/internal/healthprobe"
)

// JournalVersion is the format version written into every journal.
const JournalVersion = 1

// MaxDone bounds the remembered terminal outcomes.
const MaxDone = 256

// Journal is the update journal (docs/apply.md): what each slot runs, what
// it ran before, and the phase of every assignment in flight. The reconciler
// owns it and writes it before every side effect.
type Journal struct {
	Version int              `json:"version"`
	Slots   map[string]*Slot `json:"slots"` // by artifact name
	Tasks   map[string]*Task `json:"tasks"` // in-flight assignments by id
	Done    []Done           `json:"done"`  // terminal outcomes, oldest first
	// Forget holds versions a slot no longer keeps whose bytes live in a
	// store of their own (container images), until they are removed: a
	// crash between an outcome and the removal must not leak them.
	Forget []*Artifact `json:"forget,omitempty"`
}

// Slot is one artifact name on the device.
type Slot struct {
	Current  *Artifact `json:"current,omitempty"`
	Previous *Artifact `json:"previous,omitempty"`
	// Original is, for a config slot, the backup of what the destination
	// held before Meshanics first placed a file there; a revert to nothing
	// puts it back.
	Original string `json:"original_backup,omitempty"`
}

// Artifact is one installed (or being installed) artifact version with
// everything needed to activate it again without the network.
type Artifact struct {
	Kind       string                  `json:"kind"`
	Name       string                  `json:"name"`
	Version    string                  `json:"version"`
	SHA256     string                  `json:"sha256"`
	Length     int64                   `json:"length"`
	TargetPath string                  `json:"target_path"`
	File       string                  `json:"file,omitempty"` // staged file, absolute
	Config     *artifact.ConfigProfile `json:"config,omitempty"`
	Container  *artifact.ContainerSpec `json:"container,omitempty"`
	// Backup is, for a config, the backup directory of what this version
	// replaced at its destination.
	Backup string `json:"backup,omitempty"`
}

// Task is an assignment in flight.
type Task struct {
	AssignmentID string            `json:"assignment_id"`
	RolloutID    string            `json:"rollout_id,omitempty"`
	Action       string            `json:"action"` // apply | revert
	Phase        string            `json:"phase"`
	Artifact     Artifact          `json:"artifact"`
	RevertTo     *Artifact         `json:"revert_to,omitempty"`
	Probe        *healthprobe.Spec `json:"probe,omitempty"`
	// Prior is the slot's current artifact when activation began: what a
	// rollback restores (nil: the slot was empty).
	Prior *Artifact `json:"prior,omitempty"`
	// StagedSHA256 and StagedLength are computed while the bytes streamed
	// into the partial file; verification compares them with the assignment.
	StagedSHA256 string `json:"staged_sha256,omitempty"`
	StagedLength int64  `json:"staged_length,omitempty"`
	Attempts     int    `json:"attempts"`
	// UndoAttempts counts failed rollbacks; a rollback is retried (with
	// backoff) a few times before the assignment ends failed.
	UndoAttempts  int    `json:"undo_attempts,omitempty"`
	NextAttemptMs int64  `json:"next_attempt_unix_ms,omitempty"`
	StartedMs     int64  `json:"started_unix_ms"`
	Detail        string `json:"detail,omitempty"`
	Outcome       string `json:"outcome,omitempty"` // terminal state decided while rolling back
}

// Done is a terminal outcome, kept so a repeated assignment is re-reported,
// not redone.
type Done struct {
	AssignmentID string `json:"assignment_id"`
	State        string `json:"state"`
	Detail       string `json:"detail,omitempty"`
	StartedMs    int64  `json:"started_unix_ms"`
	AtMs         int64  `json:"at_unix_ms"`
}

// NewJournal returns an empty journal.
func NewJournal() *Journal {
	return &Journal{Version: JournalVersion, Slots: map[string]*Slot{}, Tasks: map[string]*Task{}}
}

// LoadJournal reads the journal at path, or returns an empty one.
func LoadJournal(path string) (*Journal, error) {
	j := NewJournal()
	ok, err := LoadJSON(path, j)
	if err != nil {
		return nil, err
	}
	if ok && j.Version != JournalVersion {
		return nil, fmt.Errorf("load journal: format version %d, want %d", j.Version, JournalVersion)
	}
	if j.Slots == nil {
		j.Slots = map[string]*Slot{}
	}
	if j.Tasks == nil {
		j.Tasks = map[string]*Task{}
	}
	return j, nil
}

// Slot returns the slot named name, creating it.
func (j *Journal) Slot(name string) *Slot {
	s := j.Slots[name]
	if s == nil {
		s = &Slot{}
		j.Slots[name] = s
	}
	return s
}

// FindDone returns the terminal outcome of an assignment, if any.
func (j *Journal) FindDone(id string) (Done, bool) {
	for i := len(j.Done) - 1; i >= 0; i-- {
		if j.Done[i].AssignmentID == id {
			return j.Done[i], true
		}
	}
	return Done{}, false
}

// AddDone records a terminal outcome, dropping the oldest beyond MaxDone.
func (j *Journal) AddDone(d Done) {
	j.Done = append(j.Done, d)
	if n := len(j.Done) - MaxDone; n > 0 {
		j.Done = append([]Done(nil), j.Done[n:]...)
	}
}

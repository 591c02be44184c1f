package tlsrecord

import "fmt"

// Snapshot is a State as data, for handing a connection to a successor process (over a Unix
// socket on the same host, like the descriptor itself: whoever can read it could read the
// socket's traffic anyway).
type Snapshot struct {
	Suite        uint16 `json:"suite"`
	ReadSecret   []byte `json:"rs"`
	ReadSeq      uint64 `json:"rq"`
	WriteSecret  []byte `json:"ws"`
	WriteSeq     uint64 `json:"wq"`
	UpdateDue    bool   `json:"u,omitempty"`
	PartialInput []byte `json:"in,omitempty"`
}

// Snapshot returns s as data.
func (s *State) Snapshot() Snapshot {
	n := s.secretLen()
	return Snapshot{Suite: s.suite, ReadSecret: append([]byte{}, s.r.secret[:n]...), ReadSeq: s.r.seq,
		WriteSecret: append([]byte{}, s.w.secret[:n]...), WriteSeq: s.w.seq, UpdateDue: s.updateDue,
		PartialInput: append([]byte(nil), s.in...)}
}

// secretLen is the suite's hash length (the suite was checked by New).
func (s *State) secretLen() int {
	h, _, _ := suiteParams(s.suite)
	return h().Size()
}

// Restore is the State a Snapshot was taken of.
func Restore(sn Snapshot) (*State, error) {
	s, err := New(sn.Suite, sn.ReadSecret, sn.WriteSecret)
	if err != nil {
		return nil, fmt.Errorf("restore tls state: %w", err)
	}
	s.r.seq, s.w.seq, s.updateDue = sn.ReadSeq, sn.WriteSeq, sn.UpdateDue
	if len(sn.PartialInput) > headerLen+maxCiphertext {
		return nil, fmt.Errorf("restore tls state: %w", ErrBadRecord)
	}
	if len(sn.PartialInput) > 0 {
		s.in = sn.PartialInput
	}
	return s, nil
}

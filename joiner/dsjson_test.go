package joiner

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/open-personalizer/personalizer/bandit"
	eventsv1 "github.com/open-personalizer/personalizer/proto/personalizer/events/v1"
)

const docEventID = "75269AD0-BFEE-4598-8196-C57383D38E10"

// docContext is the "c" of dsjson.md §1.4: the REST example of
// personalizer-rest.md §3.2 with SportsArticle excluded.
const docContext = `{"timeOfDay":"Morning","_multi":[{"_tag":"NewsArticle","i":{"constant":1,"id":"NewsArticle"},"j":[{"type":"News"}]},{"_tag":"EntertainmentArticle","i":{"constant":1,"id":"EntertainmentArticle"},"j":[{"type":"Entertainment"}]}]}`

// docJoined is dsjson.md §1.4's event: explored to NewsArticle (p 0.1),
// rewards 1 then 0.5, earliest.
func docJoined() Joined {
	rt := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	return Joined{
		Key:  "myloop/" + docEventID,
		Rank: &eventsv1.RankEvent{Loop: "myloop", EventId: docEventID, Context: []byte(docContext), Ranking: []uint32{0, 1}, Probabilities: []float32{0.1, 0.9}, ModelVersion: "myloop/model-42"},
		Time: rt,
		Outcomes: []Outcome{
			{Value: 1, Time: rt.Add(time.Second)},
			{Value: 0.5, Time: rt.Add(2 * time.Second)},
		},
		Reward: 1, Original: 1, Learnable: true,
	}
}

// TestDSJSONGolden renders dsjson.md §1.4 and compares it with the
// reference line: the same bytes but for number spelling (-1 for -1.0),
// and the same JSON values.
func TestDSJSONGolden(t *testing.T) {
	t.Parallel()
	j := docJoined()
	got := AppendDSJSON(nil, &j)
	want := `{"_label_cost":-1,"_label_probability":0.1,"_label_Action":1,"_labelIndex":0,` +
		`"o":[{"v":1,"EventId":"` + docEventID + `","ActionTaken":false},{"v":0.5,"EventId":"` + docEventID + `","ActionTaken":false}],` +
		`"Timestamp":"2024-05-01T10:00:00.0000000Z","Version":"1","EventId":"` + docEventID + `","a":[1,2],"c":` + docContext +
		`,"p":[0.1,0.9],"VWState":{"m":"myloop/model-42"},"_original_label_cost":-1}`
	if string(got) != want {
		t.Fatalf("line\n%s\nwant\n%s", got, want)
	}
	reference := `{"_label_cost":-1.0,"_label_probability":0.1,"_label_Action":1,"_labelIndex":0,"o":[{"v":1.0,"EventId":"75269AD0-BFEE-4598-8196-C57383D38E10","ActionTaken":false},{"v":0.5,"EventId":"75269AD0-BFEE-4598-8196-C57383D38E10","ActionTaken":false}],"Timestamp":"2024-05-01T10:00:00.0000000Z","Version":"1","EventId":"75269AD0-BFEE-4598-8196-C57383D38E10","a":[1,2],"c":{"timeOfDay":"Morning","_multi":[{"_tag":"NewsArticle","i":{"constant":1,"id":"NewsArticle"},"j":[{"type":"News"}]},{"_tag":"EntertainmentArticle","i":{"constant":1,"id":"EntertainmentArticle"},"j":[{"type":"Entertainment"}]}]},"p":[0.1,0.9],"VWState":{"m":"myloop/model-42"},"_original_label_cost":-1.0}`
	var a, b any
	if err := json.Unmarshal(got, &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(reference), &b); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, b) {
		t.Errorf("line and dsjson.md §1.4 hold different values:\n%v\n%v", a, b)
	}
}

// TestDSJSONReadByVW checks that joined lines are what `vw --dsjson` reads
// as labelled events (vw/README.md's rules: label keys before "c",
// "_labelIndex" present, "a" not empty), with the project's DSJSONParser,
// which implements VW's reader: the label lands on the chosen action with
// cost -reward and probability p[0]*(1-pdrop), weight 1/(1-pdrop), and
// lines that must not be learned are skipped.
func TestDSJSONReadByVW(t *testing.T) {
	t.Parallel()
	mod := func(f func(*Joined)) Joined {
		j := docJoined()
		j.Rank = &eventsv1.RankEvent{EventId: docEventID, Context: []byte(docContext), Ranking: []uint32{1, 0}, Probabilities: []float32{0.9, 0.1}}
		f(&j)
		return j
	}
	tests := []struct {
		name             string
		j                Joined
		index            int
		cost, prob, wght float32
		skip             bool
	}{
		{"online", mod(func(j *Joined) {}), 1, -1, 0.9, 1, false},
		{"default reward", mod(func(j *Joined) { j.Outcomes, j.Reward, j.Original = nil, 0.25, 0.25 }), 1, -0.25, 0.9, 1, false},
		{"zero reward", mod(func(j *Joined) { j.Reward, j.Original = 0, 0 }), 1, 0, 0.9, 1, false},
		{"apprentice miss keeps the original reward aside", mod(func(j *Joined) { j.Reward = 0 }), 1, 0, 0.9, 1, false},
		// float32(0.9) * 0.75, rounded to float32 as the joiner computes it.
		{"subsampled", mod(func(j *Joined) { j.Rank.Pdrop = 0.25 }), 1, -1, 0.67499995, 1 / 0.75, false},
		{"deferred, never activated", mod(func(j *Joined) { j.Learnable = false }), 0, 0, 0, 0, true},
		{"chosen action first in a", mod(func(j *Joined) { j.Rank.Ranking, j.Rank.Probabilities = []uint32{0, 1}, []float32{0.1, 0.9} }), 0, -1, 0.1, 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			line := AppendDSJSON(nil, &tt.j)
			c := bytes.Index(line, []byte(`"c":`))
			for _, key := range []string{`"_label_cost":`, `"_label_probability":`, `"_labelIndex":`} {
				if i := bytes.Index(line, []byte(key)); i < 0 || i > c {
					t.Errorf("%s missing or after \"c\": %s", key, line)
				}
			}
			if bytes.Contains(line, []byte(`"a":[]`)) || !bytes.Contains(line, []byte(`"a":[`)) {
				t.Errorf(`"a" missing or empty: %s`, line)
			}
			var p bandit.DSJSONParser
			var e bandit.Event
			err := p.Parse(line, &e)
			if tt.skip {
				if !errors.Is(err, bandit.ErrSkip) {
					t.Fatalf("Parse = %v, want a skipped event", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v\n%s", err, line)
			}
			index, cost, prob, ok := e.Label()
			if !ok || index != tt.index || cost != tt.cost || prob != tt.prob || e.Weight() != tt.wght || e.NumActions() != 2 {
				t.Errorf("label %v: action %d cost %v prob %v weight %v (%d actions), want %d %v %v %v",
					ok, index, cost, prob, e.Weight(), e.NumActions(), tt.index, tt.cost, tt.prob, tt.wght)
			}
		})
	}
}

func TestAppendAudit(t *testing.T) {
	t.Parallel()
	rt := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		a    Audit
		want string
	}{
		{Audit{Key: "l/e", Reason: Late, Outcome: Outcome{Value: 0.5, Time: rt.Add(11 * time.Second)}, Offset: 42, Rank: rt},
			`{"Reason":"late","Key":"l/e","v":0.5,"ActionTaken":false,"Timestamp":"2026-01-01T00:00:11.0000000Z","RankTimestamp":"2026-01-01T00:00:00.0000000Z","Partition":3,"Offset":42}`},
		{Audit{Key: "l/x", Reason: Dangling, Outcome: Outcome{Activate: true, Time: rt}, Offset: 7},
			`{"Reason":"dangling","Key":"l/x","ActionTaken":true,"Timestamp":"2026-01-01T00:00:00.0000000Z","Partition":3,"Offset":7}`},
	}
	for _, tt := range tests {
		if got := string(AppendAudit(nil, &tt.a, 3)); got != tt.want {
			t.Errorf("got  %s\nwant %s", got, tt.want)
		}
		if !json.Valid([]byte(tt.want)) {
			t.Errorf("not JSON: %s", tt.want)
		}
	}
}

// TestFloatCache checks that the cache writes what strconv writes, for
// repeated values and for values that collide in it.
func TestFloatCache(t *testing.T) {
	t.Parallel()
	var c floatCache
	r := rand.New(rand.NewPCG(7, 8))
	values := []float32{0.9, 0.1 / 11, 0, -0, 1, 1e-30, 3.4e38, 0.05000000074505806}
	for range 2000 {
		values = append(values, r.Float32(), float32(r.IntN(50))/float32(1+r.IntN(50)))
	}
	for range 3 {
		for _, v := range values {
			if got, want := string(c.append(nil, v)), string(appendFloat32(nil, v)); got != want {
				t.Fatalf("%v: cache wrote %q, strconv %q", v, got, want)
			}
		}
	}
}

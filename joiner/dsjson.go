package joiner

import (
	"strconv"

	"github.com/open-personalizer/personalizer/internal/features"
)

// timestampLayout is DSJson's Timestamp: UTC with seven fraction digits.
const timestampLayout = "2006-01-02T15:04:05.0000000Z"

// AppendDSJSON appends j as one DSJson line (without the newline), the way
// `vw --dsjson` reads it: label fields before "c", cost = -reward, the
// chosen action first in "a" (1-based), "p" aligned with "a", every outcome
// in "o", and "_skipLearn" for events that must not be learned.
func AppendDSJSON(b []byte, j *Joined) []byte {
	r := j.Rank
	ranking, probs := r.GetRanking(), r.GetProbabilities()
	b = append(b, '{')
	if !j.Learnable {
		b = append(b, `"_skipLearn":true,`...)
	}
	b = append(b, `"_label_cost":`...)
	b = appendFloat32(b, -j.Reward)
	b = append(b, `,"_label_probability":`...)
	b = appendFloat32(b, probs[0])
	b = append(b, `,"_label_Action":`...)
	b = strconv.AppendUint(b, uint64(ranking[0])+1, 10)
	b = append(b, `,"_labelIndex":`...)
	b = strconv.AppendUint(b, uint64(ranking[0]), 10)
	b = append(b, `,"o":[`...)
	for i, o := range j.Outcomes {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '{')
		if !o.Activate {
			b = append(b, `"v":`...)
			b = appendFloat32(b, o.Value)
			b = append(b, ',')
		}
		b = append(b, `"EventId":`...)
		b = features.AppendString(b, r.GetEventId())
		b = append(b, `,"ActionTaken":`...)
		b = strconv.AppendBool(b, o.Activate)
		b = append(b, '}')
	}
	b = append(b, `],"Timestamp":"`...)
	b = j.Time.UTC().AppendFormat(b, timestampLayout)
	b = append(b, `","Version":"1","EventId":`...)
	b = features.AppendString(b, r.GetEventId())
	b = append(b, `,"a":[`...)
	for i, a := range ranking {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, uint64(a)+1, 10)
	}
	b = append(b, `],"c":`...)
	b = append(b, r.GetContext()...)
	b = append(b, `,"p":[`...)
	for i, p := range probs {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendFloat32(b, p)
	}
	b = append(b, `],"VWState":{"m":`...)
	m := r.GetModelVersion()
	if m == "" {
		m = "N/A"
	}
	b = features.AppendString(b, m)
	b = append(b, `},"_original_label_cost":`...)
	b = appendFloat32(b, -j.Reward)
	return append(b, '}')
}

// appendFloat32 appends the shortest text that parses back to v.
func appendFloat32(b []byte, v float32) []byte {
	return strconv.AppendFloat(b, float64(v), 'g', -1, 32)
}

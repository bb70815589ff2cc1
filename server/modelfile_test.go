package server

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/open-personalizer/personalizer/bandit"
	personalizerv1 "github.com/open-personalizer/personalizer/proto/personalizer/v1"
)

// testSigningKey is the model signing key of newAdminEnv's server.
const testSigningKey = "0123456789abcdef0123456789abcdef"

// vwModelFile is a model file vw 9.11.2 wrote with -f (see
// testdata/vw-models/README.md).
const vwModelFile = "../testdata/vw-models/cb_mtr_lr0.1_first2000.vw"

func readTestFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// zipOf is a zip of the named entries, in order.
func zipOf(t *testing.T, entries ...[2]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	z := zip.NewWriter(&buf)
	for _, e := range entries {
		w, err := z.Create(e[0])
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(e[1]))
	}
	if err := z.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// unzip returns the entries of a zip.
func unzip(t *testing.T, data []byte) map[string][]byte {
	t.Helper()
	z, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, f := range z.File {
		r, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		out[f.Name], _ = io.ReadAll(r)
		r.Close()
	}
	return out
}

// TestAdminModelFormatsCCB exports a multi-slot loop's --ccb_explore_adf
// model as VW's model file and imports the one vw --ccb_explore_adf -f
// wrote: the learner gets it in this server's format. A model of the
// other problem type than the loop's is refused.
func TestAdminModelFormatsCCB(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, false)
	ctx := context.Background()
	ccb := &personalizerv1.Policy{Name: "carousel", Arguments: bandit.DefaultMultiSlotPolicy}
	if _, err := e.admin.CreateLoop(ctx, &personalizerv1.CreateLoopRequest{Loop: "ms", Policy: ccb}); err != nil {
		t.Fatal(err)
	}
	vwFile := readTestFile(t, "../testdata/vw-models/ccb_mtr_lr0.1_first1500.vw")
	m, err := bandit.ReadVWModel(vwFile)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	m.WriteTo(&buf)
	data := buf.Bytes()
	mv := versionOf(data, 3)
	mv.Info.Loop = "ms"
	if err := e.srv.Load(mv); err != nil {
		t.Fatal(err)
	}
	// VW's bytes but for its progress counters (from sum_loss to the l1
	// and l2 state), which a loaded model restarts.
	got, err := e.exportModel(ctx, &personalizerv1.ExportModelRequest{Loop: "ms", Format: "vw"})
	if err != nil || len(got) != len(vwFile) || !bytes.Equal(got[:0x11e], vwFile[:0x11e]) || !bytes.Equal(got[0x189:], vwFile[0x189:]) {
		t.Fatalf("ExportModel(ms, vw): %v, %d bytes (VW's file %d)", err, len(got), len(vwFile))
	}
	if err := e.importModel(ctx, "ms", vwFile); err != nil {
		t.Fatalf("import vw -f's file into the multi-slot loop: %v", err)
	}
	if _, imports := e.models.calls(); len(imports) != 1 || !bytes.Equal(imports[0], data) {
		t.Fatalf("%d imports; VW's file must reach the learner converted", len(imports))
	}

	// The other problem type: refused, over gRPC and REST (loop "test" is
	// single-slot), and nothing reaches the learner.
	for _, tt := range []struct{ loop, file, msg string }{
		{"test", "ccb_mtr_lr0.1_first1500.vw", `the model is multi-slot (--ccb_explore_adf) and loop "test" is single-slot`},
		{"ms", "cb_mtr_lr0.1_first2000.vw", `the model is single-slot (--cb_explore_adf) and loop "ms" is multi-slot`},
	} {
		err := e.importModel(ctx, tt.loop, readTestFile(t, "../testdata/vw-models/"+tt.file))
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("import %s into loop %s: %v, want InvalidArgument %q", tt.file, tt.loop, err, tt.msg)
		}
	}
	resp, body := call(t, "PUT", e.url+"/v1.1-preview.3/model", "", string(vwFile))
	if code, _ := errorCode(t, body); resp.StatusCode != 400 || code != "InvalidModelImportFormat" || !strings.Contains(string(body), `is single-slot`) {
		t.Errorf("PUT /model of a multi-slot model into the single-slot loop: %d %s", resp.StatusCode, body)
	}
	if _, imports := e.models.calls(); len(imports) != 1 {
		t.Errorf("%d imports of the other problem type reached the learner", len(imports)-1)
	}
}

// TestAdminModelFormats exports the served model as VW's model file and
// signed, over REST and gRPC, and imports VW model files and signed zips:
// a VW file reaches the learner converted, a signed one only with the
// signature of the server's key.
func TestAdminModelFormats(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t, false)
	base := e.url + "/v1.1-preview.3"
	vwFile := readTestFile(t, vwModelFile)
	m, err := bandit.ReadVWModel(vwFile)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	m.WriteTo(&buf)
	data := buf.Bytes() // the model vw -f wrote, in this server's format
	mv := versionOf(data, 3)
	mv.Info.Created = timestamppb.New(testNow.Add(time.Hour))
	if err := e.srv.Load(mv); err != nil {
		t.Fatal(err)
	}

	// ?format=vw: VW's file again, but for VW's progress counters, which
	// a loaded model restarts (the header and the weights are VW's bytes).
	resp, got := call(t, "GET", base+"/model?format=vw", "", "")
	if resp.StatusCode != 200 || len(got) != len(vwFile) || !bytes.Equal(got[:0xd6], vwFile[:0xd6]) || !bytes.Equal(got[0x16a:], vwFile[0x16a:]) {
		t.Fatalf("GET /model?format=vw: %d, %d bytes (VW's file %d)", resp.StatusCode, len(got), len(vwFile))
	}
	exportedVW := got

	// Signed: a zip of the file and its HMAC-SHA256 under the key.
	for _, q := range []string{"?signed=true", "?signed=true&format=vw"} {
		resp, got = call(t, "GET", base+"/model"+q, "", "")
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/zip" {
			t.Fatalf("GET /model%s: %d %v", q, resp.StatusCode, resp.Header)
		}
		entries := unzip(t, got)
		want := data
		if strings.Contains(q, "vw") {
			want = exportedVW
		}
		if len(entries) != 2 || !bytes.Equal(entries["model"], want) ||
			string(entries["signature"]) != hex.EncodeToString(modelSignature([]byte(testSigningKey), want))+"\n" {
			t.Errorf("GET /model%s: entries %d, model %d bytes, signature %q", q, len(entries), len(entries["model"]), entries["signature"])
		}
		if resp, body := call(t, "PUT", base+"/model", "", string(got)); resp.StatusCode != 204 {
			t.Errorf("PUT /model of GET /model%s: %d %s", q, resp.StatusCode, body)
		}
	}

	// The gRPC export gives the same files.
	for _, req := range []*personalizerv1.ExportModelRequest{{Format: "vw"}, {Signed: true, Format: "vw"}} {
		file, err := e.exportModel(context.Background(), req)
		if err != nil {
			t.Fatalf("ExportModel(%v): %v", req, err)
		}
		if !req.Signed && !bytes.Equal(file, exportedVW) || req.Signed && !bytes.Equal(unzip(t, file)["model"], exportedVW) {
			t.Errorf("ExportModel(%v): %d bytes, not REST's file", req, len(file))
		}
	}

	// VW's own file, unsigned: the learner gets it in this server's format.
	if resp, body := call(t, "PUT", base+"/model", "", string(vwFile)); resp.StatusCode != 204 {
		t.Errorf("PUT /model of vw -f's file: %d %s", resp.StatusCode, body)
	}
	_, imports := e.models.calls()
	if len(imports) != 3 || !bytes.Equal(imports[0], data) || !bytes.Equal(imports[2], data) {
		t.Fatalf("%d imports; the signed ones and VW's file must reach the learner as the served model", len(imports))
	}
	if _, err := bandit.ReadModel(bytes.NewReader(imports[1])); err != nil {
		t.Errorf("the signed VW file reached the learner unconverted: %v", err)
	}

	// Bad files: nothing reaches the learner.
	otherSig := hex.EncodeToString(modelSignature([]byte("another key of at least 32 bytes!"), data))
	goodSig := hex.EncodeToString(modelSignature([]byte(testSigningKey), data))
	changed := bytes.Clone(data)
	changed[len(changed)/2] ^= 1
	tests := []struct {
		name string
		body []byte
		code string
		msg  string
	}{
		{"another key", zipOf(t, [2]string{"model", string(data)}, [2]string{"signature", otherSig}), "InvalidModelImportSignature", "does not match"},
		{"changed model", zipOf(t, [2]string{"model", string(changed)}, [2]string{"signature", goodSig}), "InvalidModelImportSignature", "does not match"},
		{"no signature", zipOf(t, [2]string{"model", string(data)}), "InvalidModelImportSignature", `no "signature" entry`},
		{"no model", zipOf(t, [2]string{"signature", goodSig}), "InvalidModelImportFormat", `no "model" entry`},
		{"extra entry", zipOf(t, [2]string{"model", string(data)}, [2]string{"signature", goodSig}, [2]string{"x", ""}), "InvalidModelImportFormat", `unexpected entry "x"`},
		{"not a zip", []byte("PK\x03\x04 not really"), "InvalidModelImportFormat", "not a readable zip"},
		{"signed garbage", zipOf(t, [2]string{"model", "garbage"}, [2]string{"signature", hex.EncodeToString(modelSignature([]byte(testSigningKey), []byte("garbage")))}),
			"InvalidModelImportFormat", "not a bandit model file"},
		{"truncated vw", vwFile[:300], "InvalidModelImportFormat", "VW model file"},
	}
	for _, tt := range tests {
		resp, body := call(t, "PUT", base+"/model", "", string(tt.body))
		code, _ := errorCode(t, body)
		var e struct{ Error struct{ Message string } }
		json.Unmarshal(body, &e)
		if resp.StatusCode != 400 || code != tt.code || !strings.Contains(e.Error.Message, tt.msg) {
			t.Errorf("PUT /model, %s: %d %s; want 400 %s with %q", tt.name, resp.StatusCode, body, tt.code, tt.msg)
		}
	}
	for q, code := range map[string]string{"?format=onnx": "BadRequest", "?signed=maybe": "BadRequest"} {
		resp, body := call(t, "GET", base+"/model"+q, "", "")
		if c, _ := errorCode(t, body); resp.StatusCode != 400 || c != code {
			t.Errorf("GET /model%s: %d %s", q, resp.StatusCode, body)
		}
	}
	if _, after := e.models.calls(); len(after) != len(imports) {
		t.Errorf("%d bad files reached the learner", len(after)-len(imports))
	}

	// A server without a key signs nothing and takes no signed file.
	a := NewAdmin(e.srv, AdminConfig{Models: e.models})
	if _, _, err := a.exportModel(context.Background(), "", "", true); a.classify(err, "").code != "OperationNotAllowed" {
		t.Errorf("signed export without a key: %v", err)
	}
	signed := zipOf(t, [2]string{"model", string(data)}, [2]string{"signature", goodSig})
	if _, err := a.importModel(context.Background(), "", signed); a.classify(err, "").code != "InvalidModelImportSignature" || !strings.Contains(err.Error(), "no model signing key") {
		t.Errorf("signed import without a key: %v", err)
	}
}

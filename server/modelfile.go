package server

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/open-personalizer/personalizer/bandit"
)

// Model files the admin API exports and imports. A model is exported in
// this server's format (what the learner publishes and servers load) or,
// with format "vw", as a Vowpal Wabbit 9.11.2 model file; an import takes
// either, told apart by the file's header. A signed export is a zip of
// two entries: "model", the model file, and "signature", the lowercase
// hex HMAC-SHA256 of the model file's bytes under the server's model
// signing key ([AdminConfig.ModelSigningKey]). A signed import is checked
// against the same key before its model is read.
const (
	// ModelFormatVW asks an export for a VW 9.11.2 model file.
	ModelFormatVW = "vw"

	signedModelEntry     = "model"
	signedSignatureEntry = "signature"
)

// ErrInvalidSignature is a signed model whose signature is missing or
// does not match: Personalizer's InvalidModelImportSignature.
var ErrInvalidSignature = errors.New("the model's signature is not valid")

// errNoSigningKey answers a signed export on a server without a key.
var errNoSigningKey = &apiError{http.StatusServiceUnavailable, codes.FailedPrecondition, "OperationNotAllowed",
	"this server has no model signing key (--model-signing-key): it cannot sign models"}

// exportModel returns the model version the server serves for the loop
// the call addresses, and its file in format ("" or [ModelFormatVW]),
// signed (a zip with the signature) if asked.
func (a *Admin) exportModel(ctx context.Context, name, format string, signed bool) (*servingModel, []byte, error) {
	if format != "" && format != ModelFormatVW {
		return nil, nil, &apiError{http.StatusBadRequest, codes.InvalidArgument, "BadRequest",
			fmt.Sprintf("unknown model format %q: want %q for a Vowpal Wabbit 9.11.2 model file, or none for this server's format", format, ModelFormatVW)}
	}
	if signed && len(a.cfg.ModelSigningKey) == 0 {
		return nil, nil, errNoSigningKey
	}
	sm, err := a.servedModel(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	data := sm.data
	if format == ModelFormatVW {
		var buf bytes.Buffer
		if err := sm.Model.Model.WriteVW(&buf, nil); err != nil {
			return nil, nil, fmt.Errorf("write the model as a VW file: %w", err)
		}
		data = buf.Bytes()
	}
	if signed {
		if data, err = signModel(a.cfg.ModelSigningKey, data, sm.info.GetCreated().AsTime()); err != nil {
			return nil, nil, err
		}
	}
	return sm, data, nil
}

// modelSignature is the signature of a model file under key.
func modelSignature(key, model []byte) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write(model)
	return mac.Sum(nil)
}

// signModel returns the signed zip of model, its entries dated at.
func signModel(key, model []byte, at time.Time) ([]byte, error) {
	var buf bytes.Buffer
	z := zip.NewWriter(&buf)
	for _, e := range []struct {
		name string
		data []byte
	}{
		{signedModelEntry, model},
		{signedSignatureEntry, []byte(hex.EncodeToString(modelSignature(key, model)) + "\n")},
	} {
		w, err := z.CreateHeader(&zip.FileHeader{Name: e.name, Method: zip.Deflate, Modified: at.UTC()})
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := z.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// isZip reports whether data starts like a zip file.
func isZip(data []byte) bool { return bytes.HasPrefix(data, []byte("PK\x03\x04")) }

// openSigned checks the signed zip data against key and returns its
// model file, of at most max bytes. A zip that cannot be read is
// [ErrInvalidModel]; one without both entries, or whose signature does
// not match, is [ErrInvalidSignature].
func openSigned(key, data []byte, max int64) ([]byte, error) {
	if len(key) == 0 {
		return nil, fmt.Errorf("%w: this server has no model signing key (--model-signing-key) to check it with", ErrInvalidSignature)
	}
	z, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, fmt.Errorf("%w: signed model: not a readable zip: %v", ErrInvalidModel, err)
	}
	entries := map[string][]byte{}
	for _, f := range z.File {
		if f.Name != signedModelEntry && f.Name != signedSignatureEntry {
			return nil, fmt.Errorf("%w: signed model: unexpected entry %q (want only %q and %q)", ErrInvalidModel, f.Name, signedModelEntry, signedSignatureEntry)
		}
		if _, dup := entries[f.Name]; dup {
			return nil, fmt.Errorf("%w: signed model: entry %q twice", ErrInvalidModel, f.Name)
		}
		r, err := f.Open()
		if err != nil {
			return nil, fmt.Errorf("%w: signed model: entry %q: %v", ErrInvalidModel, f.Name, err)
		}
		b, err := io.ReadAll(io.LimitReader(r, max+1))
		r.Close()
		if err != nil {
			return nil, fmt.Errorf("%w: signed model: entry %q: %v", ErrInvalidModel, f.Name, err)
		}
		if int64(len(b)) > max {
			return nil, fmt.Errorf("%w: signed model: entry %q is over the limit of %d bytes", ErrInvalidModel, f.Name, max)
		}
		entries[f.Name] = b
	}
	model, ok := entries[signedModelEntry]
	if !ok {
		return nil, fmt.Errorf("%w: signed model: the zip has no %q entry", ErrInvalidModel, signedModelEntry)
	}
	sigHex, ok := entries[signedSignatureEntry]
	if !ok {
		return nil, fmt.Errorf("%w: the zip has no %q entry", ErrInvalidSignature, signedSignatureEntry)
	}
	sig, err := hex.DecodeString(string(bytes.TrimSpace(sigHex)))
	if err != nil || !hmac.Equal(sig, modelSignature(key, model)) {
		return nil, fmt.Errorf("%w: it does not match the model under this server's key (signed with another key, or changed since)", ErrInvalidSignature)
	}
	return model, nil
}

// importable returns data as a model file in this server's format, ready
// for [ModelAdmin.ImportModel] into loop l: a signed zip's model once its
// signature is checked, a VW model file converted. The model's weights
// must fit in MaxModelBytes, and its policy must be multi-slot
// (--ccb_explore_adf) exactly when the loop is: a loop's models never mix
// the two problem types.
func (a *Admin) importable(data []byte, l string, multiSlot bool) ([]byte, error) {
	if isZip(data) {
		var err error
		if data, err = openSigned(a.cfg.ModelSigningKey, data, a.cfg.MaxModelBytes); err != nil {
			return nil, err
		}
	}
	pol, err := bandit.ReadAnyModelPolicy(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidModel, err)
	}
	if pol.CCB() != multiSlot {
		if multiSlot {
			return nil, fmt.Errorf("%w: the model is single-slot (--cb_explore_adf) and loop %q is multi-slot (--ccb_explore_adf): import a multi-slot model", ErrInvalidModel, l)
		}
		return nil, fmt.Errorf("%w: the model is multi-slot (--ccb_explore_adf) and loop %q is single-slot (--cb_explore_adf): import it into a multi-slot loop", ErrInvalidModel, l)
	}
	if err := a.fits(pol, "InvalidModelImportFormat"); err != nil {
		return nil, err
	}
	m, err := bandit.ReadAnyModel(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidModel, err)
	}
	if !bandit.IsVWModel(data) {
		return data, nil
	}
	var buf bytes.Buffer
	if _, err := m.WriteTo(&buf); err != nil {
		return nil, fmt.Errorf("convert the VW model file: %w", err)
	}
	return buf.Bytes(), nil
}

package client

// The verifiers with the receiver's clock given, for the test vectors'
// fixed timestamps.
var (
	VerifyWebhookAt          = verifyWebhookAt
	VerifyWebhookSignatureAt = verifyWebhookSignatureAt
)

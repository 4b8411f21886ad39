# frozen_string_literal: true

require_relative "lib/asyncreply/rails/version"

Gem::Specification.new do |spec|
  spec.name = "asyncreply-rails"
  spec.version = Asyncreply::Rails::VERSION
  spec.summary = "Asynchronous Rails actions behind the asyncreply gateway"
  spec.description = <<~TEXT
    respond_to_async and render async: decide, per request, which actions
    become asynchronous behind the asyncreply gateway: the client gets 202
    Accepted and a monitor URL, the gateway replays the request in the
    background. Adapters in the manner of Active Job's (:gateway, :inline,
    :test) and a test helper that replays deferred requests in integration
    tests.
  TEXT
  spec.authors = ["The asyncreply authors"]
  spec.license = "MIT"
  spec.homepage = "https://github.com/asyncreply/asyncreply/tree/main/clients/rails"
  spec.metadata = { "source_code_uri" => spec.homepage }

  spec.required_ruby_version = ">= 2.7"
  spec.files = Dir["lib/**/*.rb", "README.md"]

  spec.add_dependency "actionpack", ">= 6.1"
  spec.add_dependency "railties", ">= 6.1"

  spec.add_development_dependency "minitest", ">= 5.15"
  spec.add_development_dependency "rake", ">= 13"
  spec.add_development_dependency "webrick", ">= 1.7"
end
